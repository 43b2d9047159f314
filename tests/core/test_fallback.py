"""Shape fallback, type by type: a tensor whose rows do not fit the chosen type's block gets the next type of the
type's chain that fits, and every chain ends at F16 (README: "llama.cpp's table, extended where it has none (Q1_0 ->
Q2_0 -> Q4_0, NVFP4 -> MXFP4; 32-element types -> F16 as in llama.cpp)").

The chains are written out here, as the contract, not read from the registry: a plugin that changes its own
``fallback=`` (say F16 -> BF16) fails.  The golden llama-quantize runs cannot catch that: their row lengths are all
multiples of 32, so no chain there reaches its end.
"""

from __future__ import annotations

import numpy as np
import pytest

import qf
from model_factory import write_model
from qf.app.pipeline import make_plan
from qf.gguf_io import GGUFFile
from qf.plugins import get_registry

# llama.cpp's tensor_type_fallback (one step, then F16 if that does not fit either), and qf's extensions
CHAINS = {
    **{t: ["IQ4_NL"] for t in ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS")},
    **{t: ["Q4_0"] for t in ("Q2_K", "Q3_K", "TQ1_0", "TQ2_0")},
    "Q4_K": ["Q5_0"], "Q5_K": ["Q5_1"], "Q6_K": ["Q8_0"],
    **{t: [] for t in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "MXFP4")},
    "Q1_0": ["Q2_0", "Q4_0"], "Q2_0": ["Q4_0"], "NVFP4": ["MXFP4"],
}
WIDTHS = (32, 48, 64, 96, 128, 160, 192, 256, 320, 512)
QUANTIZED = sorted(n for n, q in get_registry().quant_types.items() if q.is_quantized and q.target == "ggml")


def expected_type(type_name: str, ne0: int) -> str:
    registry = get_registry()
    for t in [type_name, *CHAINS[type_name], "F16"]:
        if ne0 % registry.quant_type(t).block_size == 0:
            return t
    raise AssertionError("F16 fits every row")


@pytest.fixture(scope="module")
def widths_model(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("fallback") / "w.gguf",
                       shapes={f"blk.{i}.attn_q.weight": (w, 2) for i, w in enumerate(WIDTHS)})


def test_every_type_has_a_stated_chain():
    assert sorted(CHAINS) == QUANTIZED


@pytest.mark.parametrize("type_name", QUANTIZED)
def test_fallback_chain_of_every_type(type_name, widths_model):
    plan, _ = make_plan(widths_model, "Q8_0", pure=True, tensor_types=[f"attn_q={type_name}"], dry_run=True)
    got = {e.source.shape[0]: (e.dst_label, e.fallback_from) for e in plan.entries}
    expected = {w: (get_registry().quant_type(expected_type(type_name, w)).ggml_name,
                    None if expected_type(type_name, w) == type_name else type_name) for w in WIDTHS}
    assert got == expected
    assert plan.n_fallback == sum(1 for w in WIDTHS if expected_type(type_name, w) != type_name)
    assert got[48][0] == "f16"  # 48 fits no quantized block: the end of every chain


def test_fallback_tensors_are_written_in_their_fallback_type(widths_model, tmp_path):
    out = tmp_path / "o.gguf"
    qf.quantize_file(widths_model, out, "Q8_0", pure=True, tensor_types=["attn_q=Q6_K"])
    f_in, f_out = GGUFFile.open(widths_model), GGUFFile.open(out)
    registry = get_registry()
    for t in f_out.tensors:
        name = expected_type("Q6_K", t.shape[0])
        assert t.type_id == registry.quant_type(name).type_id, t.name
        src = f_in.tensor(t.name)
        x = f_in.rows(src, 0, src.n_rows).view(np.float32)
        assert np.array_equal(f_out.rows(t, 0, t.n_rows), qf.quantize_rows(name, x)), t.name
