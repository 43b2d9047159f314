"""Every type qf registers for llama.cpp (the ggml target: F32, F16, BF16, the legacy, K, IQ, ternary, fp4 and low-bit
types) against llama.cpp's own C quantizer (``ggml_quantize_chunk`` in libggml-base) on randomised inputs built to
hit the edges: exact rounding ties, signed zeros, subnormals, huge and tiny magnitudes, fp16-edge values, constant
rows, single outliers, lattice rows; with no imatrix, a lognormal one, zero columns, extreme columns and all zeros.

Fresh seeds every run (the seed is in pytest's header and every failure; ``QF_FUZZ_SEED=N`` reproduces).  The C runs
in a child process: where llama.cpp aborts (a GGML_ASSERT), qf must refuse the same rows ("llama.cpp would abort").
Bytes are compared as they are, NaN/inf-bearing ones included (``qf.testing.kernel_bytes``: the kernels' raw output,
which :func:`qf.quantize_rows` refuses where llama.cpp's row validation does — checked here too), then the decoded
values (bit for bit, any NaN matching any NaN).
"""

from __future__ import annotations

import fuzz_rows
import legacy_ref
import numpy as np
import pytest

import qf
from cggml import CAborted
from qf.errors import InvalidWeightsError
from qf.plugins import get_registry
from qf.testing import kernel_bytes

pytestmark = pytest.mark.e2e

REGISTRY = get_registry()
TYPES = sorted(name for name, q in REGISTRY.quant_types.items() if q.target == "ggml")


def lengths(block: int) -> list[int]:
    return sorted({max(block, 64), 512})


def imatrices(qtype, rng, n):
    if not qtype.uses_imatrix:  # llama.cpp ignores it: both with and without must agree
        return [("none", None), ("lognormal", rng.lognormal(0, 1, n).astype(np.float32))]
    return fuzz_rows.imatrix_variants(rng, n, qtype.requires_imatrix)


def groups(type_name, qtype, rng, n):
    out = fuzz_rows.edge_rows(rng, n, qtype.block_size)
    if type_name in fuzz_rows.TIE_TYPES:
        x = fuzz_rows.tie_rows(type_name, rng, 6, n)
        assert fuzz_rows.count_exact_ties(type_name, x) >= x.size // 2
        out.append(("ties", x))
    return out


def run_ours(type_name, x, imatrix):
    try:
        return kernel_bytes(type_name, x, imatrix)
    except InvalidWeightsError as exc:
        if "would abort" in str(exc):
            return "abort"
        raise


def run_c(cworker, type_id, x, imatrix):
    try:
        return cworker.quantize(type_id, x, imatrix)
    except CAborted:
        return "abort"


def same_floats(a: np.ndarray, b: np.ndarray) -> bool:
    nan = np.isnan(a)
    return bool(np.array_equal(nan, np.isnan(b)) and np.array_equal(a[~nan].view(np.uint32), b[~nan].view(np.uint32)))


def describe(ours, theirs, type_size, x, what) -> str:
    a, b = ours.reshape(-1, type_size), theirs.reshape(-1, type_size)
    bad = np.flatnonzero((a != b).any(axis=1))
    per_row = ours.shape[1] // type_size
    first = bad[0]
    row = x[first // per_row]
    block = row[(first % per_row) * (x.shape[1] // per_row):][: x.shape[1] // per_row]
    return (f"{what}: {bad.size} of {a.shape[0]} blocks differ (rows {sorted(set((bad // per_row).tolist()))[:8]});"
            f" first #{first}\n    qf:   {a[first].tobytes().hex()}\n    ggml: {b[first].tobytes().hex()}\n"
            f"    x[:8]: {block[:8].tolist()}")


def compare(type_name, qtype, cworker, label, x, imatrix, im_label, failures) -> int:
    """Compare one group of rows; returns the number of rows compared byte for byte."""
    what = f"{type_name} n={x.shape[1]} rows={label} imatrix={im_label}"
    ours = run_ours(type_name, x, imatrix)
    theirs = "not run" if isinstance(ours, str) and x.shape[0] > 1 else run_c(cworker, qtype.type_id, x, imatrix)
    if isinstance(ours, str) or isinstance(theirs, str):
        if x.shape[0] > 1:  # find the rows: one at a time
            return sum(compare(type_name, qtype, cworker, f"{label}[{r}]", x[r:r + 1], imatrix, im_label, failures)
                       for r in range(x.shape[0]))
        if not (isinstance(ours, str) and isinstance(theirs, str)):  # both abort: agreed
            failures.append(f"{what}: qf {'refuses' if isinstance(ours, str) else 'quantizes'} where llama.cpp"
                            f" {'aborts' if isinstance(theirs, str) else 'quantizes'}; x[:8] = {x[0, :8].tolist()}")
        return 0
    if not np.array_equal(ours, theirs):
        failures.append(describe(ours, theirs, qtype.type_size, x, what))
        return x.shape[0]
    if qtype.name != "F32":  # F32 has no to_float in ggml (a copy)
        if not same_floats(qf.dequantize_rows(type_name, ours, x.shape[1]),
                           cworker.dequantize(qtype.type_id, theirs, x.shape[1])):
            failures.append(f"{what}: same bytes, different decoded values")
    valid = cworker.validate(qtype.type_id, theirs)
    try:
        qf.quantize_rows(type_name, x, imatrix)
        accepted = True
    except InvalidWeightsError:
        accepted = False
    if accepted != valid:
        failures.append(f"{what}: qf.quantize_rows {'accepts' if accepted else 'refuses'} rows whose result"
                        f" ggml_validate_row_data {'accepts' if valid else 'refuses'}")
    return x.shape[0]


@pytest.mark.parametrize("type_name", TYPES)
def test_bytes_like_llama_cpp_on_edge_inputs(type_name, cworker):
    qtype = REGISTRY.quant_type(type_name)
    failures, compared = [], 0
    for n in lengths(qtype.block_size):
        rng = fuzz_rows.rng_for("c-fuzz", type_name, n)
        rows = groups(type_name, qtype, rng, n)
        for im_label, imatrix in imatrices(qtype, rng, n):
            for label, x in rows:
                compared += compare(type_name, qtype, cworker, label, x, imatrix, im_label, failures)
    assert not failures, f"{len(failures)} mismatches ({fuzz_rows.reproduce_hint()}):\n" + "\n".join(failures[:12])
    assert compared >= 100, f"only {compared} rows compared"  # most rows must be quantized by both


@pytest.mark.parametrize("type_name", fuzz_rows.TIE_TYPES)
def test_legacy_reference_is_llama_cpp_on_ties(type_name, cworker):
    """The numpy reference that the default test env compares qf with on ties (tests/support/legacy_ref.py) is
    llama.cpp's C on them too."""
    qtype = REGISTRY.quant_type(type_name)
    rng = fuzz_rows.rng_for("c-ties", type_name)
    for n in (32, 256):
        x = fuzz_rows.tie_rows(type_name, rng, 8, n)
        theirs = cworker.quantize(qtype.type_id, x)
        assert np.array_equal(legacy_ref.QUANTIZE[type_name](x), theirs), fuzz_rows.reproduce_hint()


@pytest.mark.parametrize("type_name,valid", [(t, False) for t in ("Q4_0", "Q5_0", "Q2_K", "Q4_K", "Q5_K", "IQ4_NL",
                                                                  "IQ4_XS")] +
                         [(t, True) for t in ("Q8_0", "Q4_1", "Q5_1", "Q3_K", "Q6_K")])
def test_scale_overflow_rows_like_llama_cpp(type_name, valid, cworker):
    """The rows of tests/plugins/quants/test_validation.py: the same bytes as llama.cpp, which its validation
    refuses (inf/NaN scales) for the types listed there, and accepts for the others."""
    qtype = REGISTRY.quant_type(type_name)
    x, imatrix = fuzz_rows.scale_overflow_rows(max(qtype.block_size, 32))
    theirs = cworker.quantize(qtype.type_id, x, imatrix)
    assert np.array_equal(kernel_bytes(type_name, x, imatrix), theirs)
    assert cworker.validate(qtype.type_id, theirs) == valid


def test_mxfp4_exponent_wrap_like_llama_cpp(cworker):
    """The tiny rows of tests/plugins/quants/test_validation.py: llama.cpp writes E8M0 = 255 too, and refuses it."""
    x = fuzz_rows.exponent_wrap_rows()
    theirs = cworker.quantize(39, x)
    assert np.array_equal(kernel_bytes("MXFP4", x), theirs) and 255 in theirs.reshape(-1, 17)[:, 0].tolist()
    assert not cworker.validate(39, theirs)


def test_every_ggml_type_is_fuzzed():
    """The comparison above covers every llama.cpp type qf registers, the legacy ones included."""
    assert {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q6_K", "IQ1_S", "IQ4_XS", "TQ1_0",
            "MXFP4", "NVFP4", "Q1_0", "Q2_0"} <= set(TYPES)
    assert len(TYPES) == 28
