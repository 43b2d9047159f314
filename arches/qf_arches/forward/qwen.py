"""Qwen families: qwen2 (q/k/v biases), qwen3 (per-head q/k RMS norms), qwen3moe (qwen3 attention, softmax-gated
experts with normalised weights); NEOX RoPE."""

from __future__ import annotations

from qf_arches.forward.common import Decoder


class Qwen(Decoder):
    rope_neox = True
    moe_gating = "softmax"
    moe_norm_weights = True


def build(model):
    return Qwen(model)
