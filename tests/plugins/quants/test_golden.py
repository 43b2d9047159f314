"""Byte parity with llama.cpp's own output (../shared/golden), for every registered type and every case.

Parametrized over the registry, so a newly registered type is tested automatically; a registered type with golden
data that fails, a built-in type without golden data (unless listed in NOT_LLAMA_CPP_TYPES), a golden type no longer
registered, or a golden case that is missing from the comparison, fails the suite.
"""

from __future__ import annotations

import numpy as np
import pytest

import qf
from paths import GOLDEN, golden_case
from qf.plugins import get_registry
from qf.testing import kernel_bytes

REGISTERED = sorted(get_registry().quant_types)

# built-in types that ggml_quantize_chunk does not produce, so the golden data has none: each with the reason
NOT_LLAMA_CPP_TYPES = {
    "F32": "the source format itself: llama.cpp copies it (memcpy), there is nothing to quantize",
}


def builtin(type_name: str) -> bool:
    """Registered by qf's own distribution (a third-party plugin's type is tested by its own kit, not here)."""
    registry = get_registry()
    plugin = registry.quant_type(type_name).plugin
    return any(p.name == plugin and p.distribution == "qf" for p in registry.plugins)


def test_not_llama_cpp_types_are_registered_and_have_no_golden_data(golden_manifest):
    for name in NOT_LLAMA_CPP_TYPES:
        assert name in REGISTERED and builtin(name), name
        assert name not in golden_manifest["types"], f"{name} has golden data: remove it from NOT_LLAMA_CPP_TYPES"


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
        if type_name in NOT_LLAMA_CPP_TYPES:
            pytest.skip(f"{type_name}: not a llama.cpp quantizer output ({NOT_LLAMA_CPP_TYPES[type_name]})")
        if not builtin(type_name):
            pytest.skip(f"{type_name} comes from a third-party plugin ({qtype.plugin}): its own kit tests it")
        pytest.fail(f"{type_name} is registered but has no golden data: add it to ../shared/golden (or, if llama.cpp"
                    f" does not produce it, to NOT_LLAMA_CPP_TYPES with the reason)", pytrace=False)
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
    assert not missing, f"golden types no plugin registers (any more): {', '.join(missing)}"


@pytest.mark.parametrize("type_name", REGISTERED)
def test_dequantize_matches_gguf(type_name, golden_manifest, golden_inputs):
    """Our decoder agrees with gguf-py's on llama.cpp's bytes."""
    gguf_quants = pytest.importorskip("gguf.quants")
    import gguf

    qtype = get_registry().quant_type(type_name)
    if type_name not in golden_manifest["types"]:
        pytest.skip(f"{type_name} has no golden data (test_golden_bytes says why)")
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
