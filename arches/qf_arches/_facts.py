"""The hparam facts architecture plugins hand to the mix rules (what llama.cpp's loader derives per arch)."""

from __future__ import annotations

import attrs
import numpy as np

from qf import ArchFacts

# llama.cpp's tensor_allows_quantization: substrings of names that are never quantized, whatever the architecture
NEVER_QUANTIZED = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj",
    "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight",
    "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
    "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight",
    "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd",
    "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
)
NEVER_QUANTIZED_NAMES = ("position_embd.weight", "token_types.weight")


def default_facts(metadata: dict) -> ArchFacts:
    """Facts from the standard hparam keys (what llama.cpp's loader reads for every architecture)."""
    arch = metadata.get("general.architecture", "")

    def first(key: str, default: int = 0) -> int:
        value = metadata.get(f"{arch}.{key}", default)
        if isinstance(value, (list, tuple, np.ndarray)):
            value = value[0] if len(value) else default
        return int(value)

    n_head = first("attention.head_count")
    n_head_kv = first("attention.head_count_kv", n_head)
    return ArchFacts(arch=arch, n_layer_all=first("block_count"), n_nextn=first("nextn_predict_layers"),
                     n_expert=first("expert_count"), n_gqa=n_head // n_head_kv if n_head_kv else 0,
                     never_quantized=NEVER_QUANTIZED, never_quantized_names=NEVER_QUANTIZED_NAMES)


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
    return attrs.evolve(default_facts(metadata), never_quantized=NEVER_QUANTIZED + GLM5_NEXT_UNQUANTIZED)
