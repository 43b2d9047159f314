"""Rounding ties of the legacy types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), which the golden cases do not contain.

llama.cpp rounds Q8_0 with ``roundf`` (half away from zero) and the others by truncating ``x0 + 8.5f`` (``+ 16.5f``,
``+ 0.5f``); round-half-to-even, or any other rounding, agrees everywhere except at exact ties.  The reference here
(tests/support/legacy_ref.py, plain numpy) is first proved equal to llama.cpp's golden bytes, then compared with qf
on rows built to tie (fresh seeds each run; QF_FUZZ_SEED reproduces).  tests/e2e/test_c_fuzz.py compares the same
rows with llama.cpp's C itself.
"""

from __future__ import annotations

import fuzz_rows
import legacy_ref
import numpy as np
import pytest

from paths import GOLDEN
from qf.plugins import get_registry
from qf.testing import kernel_bytes

TYPES = fuzz_rows.TIE_TYPES


def first_difference(ours: np.ndarray, ref: np.ndarray, type_size: int, x: np.ndarray) -> str:
    a, b = ours.reshape(-1, type_size), ref.reshape(-1, type_size)
    bad = np.flatnonzero((a != b).any(axis=1))
    block = x.reshape(-1, 32)[bad[0]]
    return (f"{bad.size} of {a.shape[0]} blocks differ; first #{bad[0]}\n  qf:  {a[bad[0]].tobytes().hex()}\n"
            f"  ref: {b[bad[0]].tobytes().hex()}\n  x:   {block.tolist()}\n  {fuzz_rows.reproduce_hint()}")


@pytest.mark.parametrize("type_name", TYPES)
def test_reference_is_llama_cpp_on_the_golden_cases(type_name, golden_manifest, golden_inputs):
    """The numpy reference writes llama.cpp's bytes on every golden case without an imatrix (its ref path)."""
    golden = np.load(GOLDEN / f"{type_name}.npz")
    cases = [c for c in golden.files if not golden_manifest["cases"][c]["imatrix"]]
    assert len(cases) >= 6, cases
    for case in cases:
        x = golden_inputs[f"{case}/x"]
        with np.errstate(all="ignore"):
            ref = legacy_ref.QUANTIZE[type_name](x)
        assert np.array_equal(ref, golden[case]), case


@pytest.mark.parametrize("seed", ["fixed", "fresh"])
@pytest.mark.parametrize("type_name", TYPES)
def test_ties_like_llama_cpp(type_name, seed):
    rng = np.random.default_rng(0) if seed == "fixed" else fuzz_rows.rng_for("ties", type_name)
    qtype = get_registry().quant_type(type_name)
    for n_per_row in (32, 256, 1024):
        x = fuzz_rows.tie_rows(type_name, rng, 8, n_per_row)
        assert fuzz_rows.count_exact_ties(type_name, x) >= x.size // 2  # the rows still tie (no hollow test)
        ours, ref = kernel_bytes(type_name, x), legacy_ref.QUANTIZE[type_name](x)
        assert np.array_equal(ours, ref), first_difference(ours, ref, qtype.type_size, x)


@pytest.mark.parametrize("type_name", TYPES)
def test_edge_rows_like_llama_cpp(type_name):
    """Signed zeros, subnormals, fp16-edge, constant, outlier and lattice rows (finite scales only: the C fuzz
    compares the overflowing rest)."""
    rng = fuzz_rows.rng_for("edges", type_name)
    qtype = get_registry().quant_type(type_name)
    for label, x in fuzz_rows.edge_rows(rng, 256, 32):
        if label in ("huge", "mixed_scales"):
            continue
        with np.errstate(all="ignore"):
            ref = legacy_ref.QUANTIZE[type_name](x)
        ours = kernel_bytes(type_name, x)
        assert np.array_equal(ours, ref), f"{label}: " + first_difference(ours, ref, qtype.type_size, x)


def test_q8_0_rounds_half_away_from_zero():
    """By value: amax 127/128 gives d = 1/128 exactly, so x = (k + 1/2)/128 rounds to k + 1 (away from zero) —
    round-half-to-even would give 2 for 2.5 and 0 for ±0.5."""
    steps = np.array([127, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 3.5, 125.5, -126.5, 0, -0.0] + [1] * 20, np.float32)
    out = kernel_bytes("Q8_0", (steps / 128).reshape(1, 32))[0]
    assert out[:2].view(np.float16)[0] == np.float16(1 / 128)
    expected = [127, 1, -1, 2, -2, 3, -3, 4, 126, -127, 0, 0] + [1] * 20
    assert out[2:].view(np.int8).tolist() == expected


@pytest.mark.parametrize("type_name,anchor,offset", [("Q4_0", 8, 8.5), ("Q5_0", 16, 16.5)])
def test_type0_ties_truncate_upward(type_name, anchor, offset):
    """By value: max = -anchor·s gives d = s; x0 + offset = k + 1 exactly at a tie, stored as k + 1 (clamped)."""
    s = np.float32(2.0 ** -6)
    halves = np.array([-7.5, -0.5, 0.5, 6.5, 7.5] * 6 + [-0.5], np.float32)
    x = np.concatenate([[-anchor], halves]).astype(np.float32) * s
    out = kernel_bytes(type_name, x.reshape(1, 32))[0]
    assert out[:2].view(np.float16)[0] == np.float16(s)
    q = np.minimum(2 * anchor - 1, np.trunc(x / s + np.float32(offset)).astype(int))
    assert q[0] == 0 and q[1] == int(-7.5 + offset)  # e.g. Q4_0: -7.5 + 8.5 = 1.0 exactly -> 1
    nib = out[2:] if type_name == "Q4_0" else out[6:]
    low = (q[:16] & 0xF) | ((q[16:] & 0xF) << 4)
    assert nib.tolist() == low.tolist()
