"""Byte parity with llama.cpp's own output (../shared/golden), for every registered type and every case.

Parametrized over the registry, so a newly registered type is tested automatically; a registered type with golden
data that fails, or a golden case that is missing from the comparison, fails the suite.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import qf
from paths import GOLDEN, golden_case
from qf.plugins import get_registry
from qf.testing import kernel_bytes

REGISTERED = sorted(get_registry().quant_types)
GOLDEN_TYPES = sorted(json.loads((GOLDEN / "MANIFEST.json").read_text())["types"]) if GOLDEN.exists() else []


def describe_mismatch(ours: np.ndarray, ref: np.ndarray, block_bytes: int) -> str:
    a = ours.reshape(-1, block_bytes)
    b = ref.reshape(-1, block_bytes)
    bad = np.flatnonzero((a != b).any(axis=1))
    first = bad[0]
    return (f"{bad.size} of {a.shape[0]} blocks differ; first bad block #{first}:\n"
            f"  qf:    {a[first].tobytes().hex()}\n  ggml:  {b[first].tobytes().hex()}")


@pytest.mark.parametrize("type_name", REGISTERED)
def test_golden_bytes(type_name, golden_manifest, golden_inputs):
    qtype = get_registry().quant_type(type_name)
    if type_name not in golden_manifest["types"]:
        pytest.skip(f"{type_name} has no golden data (not a llama.cpp type)")
    spec = golden_manifest["types"][type_name]
    assert spec["id"] == qtype.type_id
    assert spec["block_size"] == qtype.block_size
    assert spec["requires_imatrix"] == qtype.requires_imatrix
    golden = np.load(GOLDEN / f"{type_name}.npz")
    assert sorted(golden.files) == sorted(spec["row_bytes"]), "golden npz and manifest disagree on the cases"
    failures = []
    for case in golden.files:
        x, imatrix = golden_case(golden_inputs, case)
        ref = golden[case]
        ours = kernel_bytes(type_name, x, imatrix)
        assert ours.shape == ref.shape, f"{case}: shape {ours.shape} != {ref.shape}"
        if not np.array_equal(ours, ref):
            failures.append(f"{type_name}/{case}: " + describe_mismatch(ours, ref, qtype.type_size))
    assert not failures, "\n".join(failures)


def test_every_golden_case_is_compared(golden_manifest, golden_inputs):
    """A case is absent from a type's golden file only where llama.cpp cannot produce it."""
    for type_name, spec in golden_manifest["types"].items():
        for case, meta in golden_manifest["cases"].items():
            n_per_row = meta["shape"][1]
            fits = n_per_row % spec["block_size"] == 0
            possible = fits and (meta["imatrix"] or not spec["requires_imatrix"])
            assert (case in spec["row_bytes"]) == possible, (type_name, case)


def test_golden_types_are_registered(golden_manifest):
    missing = sorted(set(golden_manifest["types"]) - set(REGISTERED))
    if missing:
        pytest.xfail(f"golden types without a registered plugin yet: {', '.join(missing)}")


@pytest.mark.parametrize("type_name", REGISTERED)
def test_dequantize_matches_gguf(type_name, golden_manifest, golden_inputs):
    """Our decoder agrees with gguf-py's on llama.cpp's bytes."""
    gguf_quants = pytest.importorskip("gguf.quants")
    import gguf

    qtype = get_registry().quant_type(type_name)
    if type_name not in golden_manifest["types"]:
        pytest.skip(f"{type_name} has no golden data")
    try:
        gtype = gguf.GGMLQuantizationType(qtype.type_id)
    except ValueError:
        pytest.skip(f"gguf does not know type id {qtype.type_id}")
    golden = np.load(GOLDEN / f"{type_name}.npz")
    for case in golden.files:
        data = golden[case]
        n_per_row = golden_inputs[f"{case}/x"].shape[1]
        ours = qf.dequantize_rows(type_name, data, n_per_row)
        try:
            theirs = gguf_quants.dequantize(data, gtype).reshape(ours.shape)
        except NotImplementedError:
            pytest.skip(f"gguf cannot dequantize {type_name}")
        np.testing.assert_array_equal(ours.view(np.uint32), theirs.astype(np.float32).view(np.uint32), err_msg=case)
