"""Llama family (llama, SmolLM2, Mistral; Mixtral-style experts): normal RoPE, optional rope_freqs factors."""

from __future__ import annotations

from qf_arches.forward.common import Decoder


class Llama(Decoder):
    moe_gating = "softmax"  # llama.cpp's llama graph: softmax gating, normalised weights
    moe_norm_weights = True


def build(model):
    return Llama(model)
