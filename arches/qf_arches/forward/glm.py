"""GLM-4.5 (glm4moe): q/k/v biases, optional q/k norms, partial NEOX RoPE, post-attention norm before the FFN, one
leading dense block, sigmoid-gated experts with a selection bias and a shared expert, and an MTP/NextN block
(``blk.<n_layer>``) that llama.cpp's speculative decoding runs (``--mtp``)."""

from __future__ import annotations

from qf_arches.forward.common import Decoder


class Glm4Moe(Decoder):
    rope_neox = True
    ffn_norm = "post_attention_norm"
    moe_default_gating = "sigmoid"


def build(model):
    return Glm4Moe(model)
