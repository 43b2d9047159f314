"""IQ4_NL, IQ4_XS, TQ1_0, TQ2_0, MXFP4, NVFP4, Q1_0, Q2_0 beyond the golden cases.

* the shortcuts the kernels take (table lookup for best_index_int8, midpoint counting for best_index_mxfp4, the
  floor of log2f) against the literal ggml procedures, over whole float32 ranges;
* the ``rtn`` strategy through pose/pack: valid blocks and an error close to (or below) ggml's;
* pose/pack round trip: packing ggml's own solution of its own output gives ggml's bytes back;
* fuzzing against llama.cpp's C quantizers and dequantizers (skipped without libggml-base).
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import pytest

import qf
from cggml import CGGML
from qf.plugins import get_registry

TYPES = ("IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0", "Q2_0")
KVALUES_IQ4 = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.float32)


@pytest.fixture(scope="module")
def cggml():
    try:
        c = CGGML.load()
    except OSError as exc:
        pytest.skip(f"libggml-base could not be loaded: {exc}")
    if c is None:
        pytest.skip("libggml-base not found (set QF_LIBGGML_BASE or install llama-cpp-python)")
    c.lib.ggml_validate_row_data.restype = ctypes.c_bool
    c.lib.ggml_validate_row_data.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    return c


def gauss(rows: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, n)) * 0.02
    x[rng.random((rows, n)) < 0.002] *= 10
    return x.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# registration


def test_registered_as_ggml_defines_them():
    registry = get_registry()
    expected = {  # name: (id, block, bytes, problems, fallback, uses imatrix, ggml name)
        "IQ4_NL": (20, 32, 18, ("table",), "F16", True, "iq4_nl"),
        "IQ4_XS": (23, 256, 136, ("table",), "IQ4_NL", True, "iq4_xs"),
        "TQ1_0": (34, 256, 54, ("symmetric",), "Q4_0", False, "tq1_0"),
        "TQ2_0": (35, 256, 66, ("symmetric",), "Q4_0", False, "tq2_0"),
        "MXFP4": (39, 32, 17, ("table",), "F16", False, "mxfp4"),
        "NVFP4": (40, 64, 36, ("table",), "MXFP4", False, "nvfp4"),  # qf extension (llama.cpp: none)
        "Q1_0": (41, 128, 18, ("table",), "Q2_0", False, "q1_0"),  # qf extension (llama.cpp: none)
        "Q2_0": (42, 64, 18, ("symmetric",), "Q4_0", False, "q2_0"),
    }
    for name, (type_id, block, size, problems, fallback, uses, ggml_name) in expected.items():
        t = registry.quant_type(name)
        got = (t.type_id, t.block_size, t.type_size, t.problems, t.fallback, t.uses_imatrix, t.ggml_name)
        assert got == (type_id, block, size, problems, fallback, uses, ggml_name)
        assert not t.requires_imatrix and not t.quantize_requires_imatrix
        assert registry.type_sizes()(type_id) == (block, size)


def test_sizes_agree_with_c(cggml):
    for name in TYPES:
        t = get_registry().quant_type(name)
        assert cggml.lib.ggml_row_size(t.type_id, 4 * t.block_size) == 4 * t.type_size


# ---------------------------------------------------------------------------------------------------------------------
# the kernels' shortcuts against ggml's literal procedures


def test_iq4_best_index_lookup_equals_bisection():
    from qf_plugins.quants import _iq4_kernels as k

    f32 = np.array([4.0, 128.0, 0.0], np.float32).view(np.uint32)
    # every float32 with 4 <= |v| <= 128 (all midpoints live there), then the rest sampled
    assert k.check_best_index(int(f32[0]), int(f32[1]) + 1) == -1
    assert k.check_best_index(int(f32[0]) | (1 << 31), (int(f32[1]) | (1 << 31)) + 1) == -1
    rng = np.random.default_rng(0)
    for u in rng.integers(0, 1 << 32, 64, dtype=np.uint64):
        assert k.check_best_index(int(u), int(u) + 100_000) == -1
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -127.0, 113.0, -4.5, 7.0, 101.0], np.float32)
    for v in special:
        assert k.best_index(v) == k.best_index_bisect(v), v


def test_fp4_midpoint_count_equals_scan():
    from qf_plugins.quants import _fp4_kernels as k

    rng = np.random.default_rng(1)
    scales = [np.float32(2.0) ** e for e in (-128, -127, -126, -100, -20, -7, 0, 5, 60, 119, 120, 124, 125)]
    scales += [k.UE4M3_HALF[c] for c in range(0x7F)] + [np.float32(0.0)]
    mids = np.array([0.5, 1.5, 2.5, 3.5, 5.0, 7.0, 10.0, 12.0, 14.0, 16.0], np.float32)
    for d in scales:
        d = np.float32(d)
        with np.errstate(over="ignore"):
            v = fp4_probe_values(d, mids, rng)
        assert k.check_fp4_code(v[np.isfinite(v)], d) == -1, d


def fp4_probe_values(d, mids, rng):
    """Each midpoint (and 12, 14, 16) times d and its float neighbours, both signs, plus random and extreme values."""
    around = (mids * d).astype(np.float32)
    near = np.concatenate([np.nextafter(around, np.float32(-np.inf)), around, np.nextafter(around, np.float32(np.inf))])
    return np.concatenate([near, -near, rng.uniform(-20, 20, 2000).astype(np.float32) * d,
                           (rng.standard_normal(200) * 1e3).astype(np.float32) * d,
                           np.array([0.0, -0.0, 1e-45, -1e-45, 3e38, -3e38], np.float32)]).astype(np.float32)


def test_mxfp4_exponent_floor_matches_libm_log2f():
    from qf_plugins.quants import _fp4_kernels as k

    libm = ctypes.util.find_library("m")
    if libm is None:
        pytest.skip("libm not found")
    log2f = ctypes.CDLL(libm).log2f
    log2f.restype = ctypes.c_float
    log2f.argtypes = [ctypes.c_float]
    # just below each power of two (where log2f may round up to it), and a sample of subnormals
    top = np.arange(0x7FFE00, 0x800001, 7, dtype=np.uint32)
    bits = np.concatenate([(np.uint32(e) << np.uint32(23)) + top for e in range(254)]
                          + [np.arange(1, 1 << 23, 4099, dtype=np.uint32)])
    values = bits.view(np.float32)
    values = values[(values > 0) & np.isfinite(values)]
    for a in values:
        assert k.floor_log2f(np.float32(a)) == int(np.floor(np.float32(log2f(float(a))))), a.view(np.uint32)


# ---------------------------------------------------------------------------------------------------------------------
# rtn through pose/pack


def own_validity(name: str, data: np.ndarray, n_per_row: int) -> None:
    t = get_registry().quant_type(name)
    blocks = data.reshape(-1, t.type_size)
    fp16_at = {"IQ4_NL": 0, "IQ4_XS": 0, "TQ1_0": 52, "TQ2_0": 64, "Q1_0": 0, "Q2_0": 0}
    if name in fp16_at:
        o = fp16_at[name]
        d = blocks[:, o:o + 2].copy().view(np.float16)
        assert np.isfinite(d).all()
    if name == "MXFP4":
        assert (blocks[:, 0] != 0xFF).all()
    assert np.isfinite(qf.dequantize_rows(name, data, n_per_row)).all()


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("with_imatrix", [False, True])
def test_rtn_output_is_valid_and_sane(name, with_imatrix):
    x = gauss(16, 1024, seed=2)
    imatrix = np.random.default_rng(3).lognormal(0.0, 1.0, 1024).astype(np.float32) if with_imatrix else None
    ours = qf.quantize_rows(name, x, imatrix, strategy="rtn")
    ref = qf.quantize_rows(name, x, imatrix)
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    own_validity(name, ours, 1024)
    y_rtn = qf.dequantize_rows(name, ours, 1024)
    y_ggml = qf.dequantize_rows(name, ref, 1024)
    err_rtn = float(np.mean((y_rtn - x) ** 2))
    err_ggml = float(np.mean((y_ggml - x) ** 2))
    assert err_rtn < float(np.mean(x * x))  # better than nothing (ternary data at max-|x| scale is close)
    assert err_rtn <= 1.2 * err_ggml  # and near llama.cpp's own search (below it for Q2_0, MXFP4, NVFP4)


def test_rtn_on_ternary_is_ggml():
    """TQ1_0/TQ2_0: round-to-nearest from max |x| is exactly ggml's reference quantizer."""
    x = gauss(8, 1024, seed=4)
    for name in ("TQ1_0", "TQ2_0"):
        assert np.array_equal(qf.quantize_rows(name, x, strategy="rtn"), qf.quantize_rows(name, x))


@pytest.mark.parametrize("name", ["MXFP4", "NVFP4"])
def test_fp4_pack_never_worse_than_ggml_per_scale_group(name):
    """rtn's scale is max|x|/12; ggml's representable scale is one of its two neighbours, pack picks the better."""
    x = np.concatenate([gauss(8, 1024, seed=5), (np.random.default_rng(6).standard_normal((8, 1024)) ** 3)
                        .astype(np.float32)])
    group = 32 if name == "MXFP4" else 16
    y_rtn = qf.dequantize_rows(name, qf.quantize_rows(name, x, strategy="rtn"), 1024)
    y_ggml = qf.dequantize_rows(name, qf.quantize_rows(name, x), 1024)
    e_rtn = ((y_rtn.astype(np.float64) - x) ** 2).reshape(-1, group).sum(axis=1)
    e_ggml = ((y_ggml.astype(np.float64) - x) ** 2).reshape(-1, group).sum(axis=1)
    assert (e_rtn <= e_ggml * (1 + 1e-9)).all()
    assert e_rtn.sum() < e_ggml.sum()


def test_q1_0_pack_uses_least_squares_scale():
    """A 1-bit block's scale is fixed by its signs: pack stores Σw·|x|/Σw, so rtn reproduces ggml's mean |x|."""
    x = gauss(8, 1024, seed=7)
    ours = qf.quantize_rows("Q1_0", x, strategy="rtn").reshape(-1, 18)
    ref = qf.quantize_rows("Q1_0", x).reshape(-1, 18)
    assert np.array_equal(ours[:, 2:], ref[:, 2:])  # the signs
    d_ours = ours[:, :2].copy().view(np.float16).astype(np.float32).ravel()
    d_ref = ref[:, :2].copy().view(np.float16).astype(np.float32).ravel()
    np.testing.assert_allclose(d_ours, d_ref, rtol=1e-3)


def test_pack_rejects_out_of_range_quants():
    from qf.values import BlockSolution

    x = gauss(1, 256)
    for name, bad in (("TQ1_0", 2), ("TQ2_0", -2), ("Q2_0", 3), ("Q1_0", 2)):
        codec = get_registry().quant_type(name).load_codec()
        problem = codec.pose(x, None)
        q = np.zeros(problem.x.shape, np.int32)
        q[0, 0] = bad
        with pytest.raises(ValueError, match="quants must be in"):
            codec.pack(x, None, problem, BlockSolution(np.ones(problem.x.shape[0], np.float32), q))


# ---------------------------------------------------------------------------------------------------------------------
# pose/pack round trip


def ggml_solution(name: str, data: np.ndarray, y: np.ndarray, problem):
    """Read ggml's bytes back as a BlockSolution of the posed problem (scales from the bytes, quants from y/d)."""
    from qf.values import BlockSolution
    from qf_plugins.quants import _fp4_kernels

    t = get_registry().quant_type(name)
    b = data.reshape(-1, t.type_size)

    def f16(o):
        return b[:, o:o + 2].copy().view(np.float16).astype(np.float32).ravel()

    if name == "IQ4_NL":
        d = f16(0)
    elif name == "IQ4_XS":
        sh = b[:, 2].astype(np.int64) | (b[:, 3].astype(np.int64) << 8)
        ls = np.stack([((b[:, 4 + i // 2] >> (4 * (i % 2))) & 0xF) | (((sh >> (2 * i)) & 3) << 4)
                       for i in range(8)], axis=1)
        d = (f16(0)[:, None] * (ls - 32).astype(np.float32)).ravel()
    elif name in ("TQ1_0", "TQ2_0"):
        d = f16(52 if name == "TQ1_0" else 64)
    elif name == "MXFP4":
        d = np.ldexp(np.float32(1.0), b[:, 0].astype(np.int64) - 128).astype(np.float32)
    elif name == "NVFP4":
        d = _fp4_kernels.UE4M3_HALF[b[:, :4]].ravel()
    else:
        d = f16(0)
    ratio = np.divide(problem.x, d[:, None], out=np.zeros_like(problem.x), where=d[:, None] != 0)
    if problem.kind == "table":
        q = np.abs(ratio[..., None] - problem.table).argmin(axis=-1)
    else:
        q = np.rint(ratio).astype(np.int64)
    return BlockSolution(d.astype(np.float32), q)


@pytest.mark.parametrize("name", TYPES)
def test_pose_pack_round_trip(name):
    """Dequantize ggml's output, pose it, hand pack ggml's own scales and quants: ggml's bytes come back."""
    x = gauss(8, 1024, seed=8)
    ref = qf.quantize_rows(name, x)
    y = qf.dequantize_rows(name, ref, 1024)
    codec = get_registry().quant_type(name).load_codec()
    problem = codec.pose(y, None)
    assert problem.x.shape == problem.w.shape and problem.x.shape[0] * problem.x.shape[1] == y.size
    packed = codec.pack(y, None, problem, ggml_solution(name, ref, y, problem))
    assert np.array_equal(packed, ref)


def test_iq4_pose_weights_are_the_measured_importance():
    x = gauss(2, 512, seed=9)
    im = np.random.default_rng(10).lognormal(0.0, 1.0, 512).astype(np.float32)
    for name in ("IQ4_NL", "IQ4_XS"):
        codec = get_registry().quant_type(name).load_codec()
        assert np.array_equal(codec.pose(x, None).w, np.ones((32, 32), np.float32))
        assert np.array_equal(codec.pose(x, im).w, np.broadcast_to(im, x.shape).reshape(-1, 32))
        assert list(codec.pose(x, im).table) == list(KVALUES_IQ4)


# ---------------------------------------------------------------------------------------------------------------------
# fuzzing against llama.cpp's C


def edge_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    g = rng.standard_normal(n)
    alt = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    half = g.copy()
    half[: n // 2] = 0
    spike = np.zeros(n)
    spike[n // 3] = 1e4
    scaled = g * 10.0 ** np.repeat(rng.uniform(-42, 30, n // 32), 32)
    fp4_ties = rng.integers(-24, 25, n) * 0.25 * 2.0 ** rng.integers(-10, 10)
    iq4_ties = (rng.integers(-254, 227, n) * 0.5) / 127.0
    rows = [np.zeros(n), np.full(n, 0.5), np.full(n, -3.0), g * 1e-30, g * 1e-40, alt * 1e-45, alt * 0.0,
            -alt * 0.0, g * 1e30, rng.uniform(-3.4e38, 3.4e38, n), g * 1e5, g * 7e4, np.linspace(-1, 1, n), half,
            spike, np.round(g * 4) / 4, scaled, fp4_ties, iq4_ties, g * 2.0**-126, alt * 2.0**-127 * 3]
    with np.errstate(over="ignore"):
        return np.array(rows).astype(np.float32)


def random_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    parts = [rng.standard_normal((6, n)) * 0.02, rng.standard_t(2.5, (6, n)) * 0.05, rng.uniform(-1, 1, (4, n)),
             rng.standard_normal((4, n)) * (rng.random((4, n)) < 0.1), rng.lognormal(0, 2, (4, n))]
    return np.concatenate(parts).astype(np.float32)


def imatrices(n: int, rng: np.random.Generator):
    zeros_spikes = rng.lognormal(0, 1, n)
    zeros_spikes[rng.random(n) < 0.3] = 0
    zeros_spikes[rng.random(n) < 0.02] = 1e6
    return [None, rng.lognormal(0, 1, n).astype(np.float32), zeros_spikes.astype(np.float32),
            np.zeros(n, np.float32), np.full(n, 1e-30, np.float32)]


def assert_same_floats(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    nan = np.isnan(ours)
    assert np.array_equal(nan, np.isnan(theirs)), what
    assert np.array_equal(ours[~nan].view(np.uint32), theirs[~nan].view(np.uint32)), what


@pytest.mark.parametrize("name", TYPES)
def test_fuzz_quantize_matches_c(name, cggml):
    t = get_registry().quant_type(name)
    rng = np.random.default_rng(t.type_id)
    lengths = sorted({t.block_size, 3 * t.block_size, max(t.block_size, 256) * 4})
    for n in lengths:
        for kind, x in (("edge", edge_rows(n, rng)), ("random", random_rows(n, rng))):
            for im in imatrices(n, rng) if t.uses_imatrix else [None]:
                what = f"{name} {kind} n={n} imatrix={'none' if im is None else float(im.mean())}"
                ours = qf.quantize_rows(name, x, im)
                theirs = cggml.quantize(t.type_id, x, im)
                bad = np.flatnonzero((ours != theirs).any(axis=1))
                assert bad.size == 0, f"{what}: rows {bad.tolist()} differ"
                assert_same_floats(qf.dequantize_rows(name, ours, n), cggml.dequantize(t.type_id, theirs, n), what)


@pytest.mark.parametrize("name", TYPES)
def test_dequantize_random_bytes_matches_c(name, cggml):
    """Any bytes at all (NaN/inf fp16 scales, E8M0 255, UE4M3 0x7F, unused codes) decode as C's to_float does."""
    t = get_registry().quant_type(name)
    rng = np.random.default_rng(100 + t.type_id)
    n = 4 * t.block_size
    data = rng.integers(0, 256, (64, 4 * t.type_size), dtype=np.uint8)
    assert_same_floats(qf.dequantize_rows(name, data, n), cggml.dequantize(t.type_id, data, n), name)


@pytest.mark.parametrize("name", TYPES)
def test_rtn_passes_ggml_validate_row_data(name, cggml):
    """rtn output on ordinary data passes ggml_validate_row_data."""
    t = get_registry().quant_type(name)
    x = random_rows(1024, np.random.default_rng(11))
    out = qf.quantize_rows(name, x, strategy="rtn")
    assert cggml.lib.ggml_validate_row_data(t.type_id, out.ctypes.data, out.nbytes)
