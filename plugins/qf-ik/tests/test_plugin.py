"""qf_ik as a plugin: its target and types registered through the entry points, conforming to qf's checks."""

from __future__ import annotations

import numpy as np
import pytest
from qf.errors import InvalidWeightsError
from qf.plugins import get_registry
from qf.testing import check_quant_type, check_rejects_bad_shapes, check_round_trip

from qf_ik import codecs
from qf_ik.types import MAINLINE_ONLY, QUANT_TYPES

# relative RMSE bounds on qf.testing's sample rows (roughly each type's bits per weight)
MAX_RMSE = {"Q6_0": 0.05, "IQ2_K": 0.35, "IQ3_K": 0.17, "IQ4_K": 0.09, "IQ5_K": 0.045, "IQ6_K": 0.025,
            "IQ2_KS": 0.4, "IQ2_KL": 0.3, "IQ3_KS": 0.23, "IQ4_KS": 0.12, "IQ4_KSS": 0.16, "IQ5_KS": 0.06,
            "IQ1_KT": 0.66, "IQ2_KT": 0.53, "IQ3_KT": 0.29, "IQ4_KT": 0.13}


def test_target_and_ids():
    registry = get_registry()
    ik = registry.types_of("ik")
    for t in QUANT_TYPES:
        got = registry.quant_type(t.name, target="ik")
        assert (got.type_id, got.target) == (t.type_id, "ik")
        assert got.plugin, "registered through an entry point"
        assert t.name not in registry.types_of("ggml")
    for name in MAINLINE_ONLY:
        assert name not in ik
    assert {"Q4_K", "Q8_0", "IQ4_XS"} <= set(ik)


@pytest.mark.parametrize("name", [t.name for t in QUANT_TYPES])
def test_check_quant_type(name):
    qtype = get_registry().quant_type(name)
    bound = MAX_RMSE[name.removesuffix("_R4")]
    if name.endswith("_R4") or qtype.row_meta_size:
        # qf.testing.check_sizes quantizes 3 rows (a 4-row interleave refuses them) and expects rows of
        # n/block·type_size bytes (it ignores row_meta_size): the other checks use 8 rows and qtype.row_bytes
        check_round_trip(name, bound)
        check_rejects_bad_shapes(name)
        x = np.zeros((8, 512), np.float32)
        assert getattr(codecs, name).quantize_native(x, None).shape == (8, qtype.row_bytes(512))
    else:
        check_quant_type(name, max_rel_rmse=bound)


def test_r4_refuses_partial_row_groups():
    with pytest.raises(InvalidWeightsError, match="multiple of 4"):
        codecs.IQ4_K_R4.quantize_native(np.zeros((3, 256), np.float32), None)


def test_ik_files_are_laid_out_as_ik_llama_quantize_writes_them(tmp_path, synthetic_llama):
    """--target ik keeps the input's tensor order and sets keys where they are (ik's llama-quantize); llama.cpp's
    target sorts by layer and moves a key it sets last.  (Byte equality with ik's tool: test_ik_tools.py.)"""
    from qf import quantize_file
    from qf.gguf_io import GGUFFile

    src = synthetic_llama
    sizes = get_registry().type_sizes("ik")
    inp = GGUFFile.open(src, sizes)
    keys_in = [kv.key for kv in inp.kvs]
    assert "general.file_type" in keys_in and keys_in[-1] != "general.file_type"
    for target in ("ik", "ggml"):
        out = tmp_path / f"{target}.gguf"
        quantize_file(src, out, "Q8_0", target=target)
        f = GGUFFile.open(out, sizes)
        names, keys = [t.name for t in f.tensors], [kv.key for kv in f.kvs]
        if target == "ik":
            assert names == [t.name for t in inp.tensors]
            assert keys.index("general.file_type") == keys_in.index("general.file_type")
        else:
            assert names != [t.name for t in inp.tensors] and names[0] == "output.weight"
            assert keys[-1] == "general.file_type"


def test_interleaved_types_fall_back_as_ik_llama_quantize_does(tmp_path, synthetic_llama):
    """An _R4 type takes rows in fours: a token embedding, or a tensor whose rows are not a multiple of 4, gets the
    base type (ik's llama-quantize); work units and codec calls are cut at multiples of 4, whatever their size."""
    from qf import quantize_file
    from qf.gguf_io import GGUFFile

    src = synthetic_llama
    out = tmp_path / "r4.gguf"
    plan = quantize_file(src, out, "Q8_0", target="ik", custom_q=(".*=iq4_k_r4",))
    types = {e.name: e.dst.name for e in plan.entries if e.dst is not None}
    assert types["token_embd.weight"] == "IQ4_K"
    assert types["blk.0.ffn_down.weight"] == "IQ4_K_R4" and types["blk.0.attn_q.weight"] == "IQ4_K_R4"
    sizes = get_registry().type_sizes("ik")
    written = {t.name: t.type_id for t in GGUFFile.open(out, sizes).tensors}
    assert written["blk.0.ffn_down.weight"] == get_registry().quant_type("IQ4_K_R4", target="ik").type_id
