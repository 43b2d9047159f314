"""ik's ftypes for its own types, as presets with ik's mix rules (src/llama-quantize.cpp)."""

from __future__ import annotations

import pytest
from qf import ArchFacts
from qf.plugins import get_registry
from qf_plugins.presets.mix import MixState

NAMES = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight",
         "blk.0.attn_output.weight", "blk.0.ffn_down.weight", "output.weight"]


def _plan(ftype, **facts):
    registry = get_registry()
    preset = registry.preset(ftype)
    state = MixState(registry.mix(preset.mix), ArchFacts("llama", n_layer_all=1, **facts), preset.ftype,
                     preset.default_type, 256, False, NAMES)
    out = {}
    for name in NAMES:
        chosen, _ = state.choose(name, 4096, 1)
        out[name.split(".")[-2]] = preset.default_type if chosen == "default" else chosen
    return out


def test_presets_registered_with_ik_ftype_ids():
    registry = get_registry()
    ids = {"Q6_0": 135, "IQ2_K": 138, "IQ3_K": 139, "IQ4_K": 140, "IQ5_K": 141, "IQ6_K": 142, "Q6_0_R4": 335,
           "IQ2_K_R4": 338, "IQ3_K_R4": 339, "IQ4_K_R4": 340, "IQ5_K_R4": 341}
    for name, file_type in ids.items():
        preset = registry.preset(name)
        assert preset.file_type == file_type
        registry.quant_type(preset.default_type)


@pytest.mark.parametrize(("ftype", "gqa", "expected"), [
    ("IQ2_K", 4, {"attn_v": "IQ4_K", "attn_output": "IQ3_K", "output": "Q5_K", "ffn_down": "IQ2_K"}),
    ("IQ2_K", 1, {"attn_v": "IQ3_K"}),
    ("IQ3_K", 2, {"attn_v": "IQ4_K", "output": "Q5_K"}),
    ("IQ4_K", 4, {"attn_v": "IQ5_K", "output": "Q6_K", "attn_output": "IQ4_K"}),
    ("IQ4_K_R4", 4, {"token_embd": "IQ4_K", "attn_v": "IQ5_K", "ffn_down": "IQ4_K_R4"}),
    ("IQ6_K", 4, {"output": "IQ6_K", "attn_v": "IQ6_K"}),
    ("Q6_0", 4, {"output": "Q6_K", "attn_v": "Q6_0"}),
])
def test_mix(ftype, gqa, expected):
    got = _plan(ftype, n_gqa=gqa)
    assert {k: got[k] for k in expected} == expected


def test_moe_attention_gets_q8_0():
    got = _plan("IQ4_K", n_gqa=4, n_expert=8)
    assert got["attn_v"] == "Q8_0" and got["attn_k"] == "Q8_0" and got["attn_output"] == "Q5_K"
