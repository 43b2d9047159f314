"""The hparam facts architecture plugins hand to the mix rules (what llama.cpp's loader derives per arch)."""

from __future__ import annotations

import attrs

from qf.plan import default_facts


def generic(metadata, tensors):
    return default_facts(metadata)


def llama(metadata, tensors):
    """llama.cpp's llama loader: 80 layers with grouped KV heads is LLM_TYPE_70B (65B without), not for 8 experts."""
    facts = default_facts(metadata)
    arch = facts.arch
    n_head = metadata.get(f"{arch}.attention.head_count", 0)
    n_head_kv = metadata.get(f"{arch}.attention.head_count_kv", n_head)
    n_head = n_head[0] if hasattr(n_head, "__len__") else n_head
    n_head_kv = n_head_kv[0] if hasattr(n_head_kv, "__len__") else n_head_kv
    if facts.n_expert != 8 and facts.n_layer_all - facts.n_nextn == 80 and n_head != n_head_kv:
        facts = attrs.evolve(facts, model_type="70B")
    return facts


def eighty_layers_is_70b(metadata, tensors):
    """qwen2, olmo, deci: 80 layers is LLM_TYPE_70B."""
    facts = default_facts(metadata)
    if facts.n_layer_all - facts.n_nextn == 80:
        facts = attrs.evolve(facts, model_type="70B")
    return facts


GLM5_NEXT_UNQUANTIZED = ("hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate",
                         "indexer_compressor_ape", "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight",
                         "ssm_g_b.weight", "ssm_beta.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight",
                         "attn_v_b.weight")


def glm5_next(metadata, tensors):
    """glm5-next keeps its small indexer/SSM/MLA projections unquantized (llama.cpp's arch exception)."""
    return attrs.evolve(default_facts(metadata), never_quantized=GLM5_NEXT_UNQUANTIZED)
