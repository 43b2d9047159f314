"""K-quants Q2_K..Q6_K beyond the golden bytes: registration, the generic-strategy path (pose/pack), and a fuzz
against llama.cpp's own quantizers on inputs the golden set does not have (skips without libggml-base)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import qf
from qf.plugins import get_registry
from qf.values import BlockSolution

KQUANTS = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
QK_K = 256


def rel_rmse(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(((y - x) ** 2).mean() / (x**2).mean()))


def gauss(rows: int = 16, cols: int = 1024, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((rows, cols)) * 0.02).astype(np.float32)


def lognormal_imatrix(cols: int = 1024, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(0.0, 1.0, cols).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# registration


def test_registered_as_llama_cpp_names_them():
    reg = get_registry()
    expect = {  # type id, bytes, ggml_type_name, tensor_type_fallback, problems
        "Q2_K": (10, 84, "q2_K", "Q4_0", ("asymmetric",)),
        "Q3_K": (11, 110, "q3_K", "Q4_0", ("symmetric",)),
        "Q4_K": (12, 144, "q4_K", "Q5_0", ("asymmetric",)),
        "Q5_K": (13, 176, "q5_K", "Q5_1", ("asymmetric",)),
        "Q6_K": (14, 210, "q6_K", "Q8_0", ("symmetric",)),
    }
    for name, (type_id, size, ggml_name, fallback, problems) in expect.items():
        t = reg.quant_type(name)
        assert (t.type_id, t.block_size, t.type_size) == (type_id, QK_K, size)
        assert t.ggml_name == ggml_name
        assert t.fallback == fallback
        assert t.problems == problems
        assert t.uses_imatrix
        assert not t.requires_imatrix
        assert not t.quantize_requires_imatrix
        assert t.plugin == "kquants"


def test_registering_imports_no_kernels():
    """``qf list-types`` must stay cheap: the registration module does not import numba kernels."""
    import subprocess

    code = ("import sys, qf_plugins.quants.kquants; "
            "print(any(m.startswith('qf_plugins.quants._') for m in sys.modules), 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


# ---------------------------------------------------------------------------------------------------------------------
# the generic path: rtn through pose/pack


@pytest.mark.parametrize("type_name", KQUANTS)
@pytest.mark.parametrize("with_imatrix", [False, True])
def test_rtn_is_valid_and_sane(type_name, with_imatrix):
    x = gauss()
    imatrix = lognormal_imatrix() if with_imatrix else None
    qtype = get_registry().quant_type(type_name)
    data = qf.quantize_rows(type_name, x, imatrix, strategy="rtn")
    assert data.dtype == np.uint8
    assert data.shape == (x.shape[0], qtype.row_bytes(x.shape[1]))
    y = qf.dequantize_rows(type_name, data, x.shape[1])
    assert np.isfinite(y).all()
    err_rtn = rel_rmse(x, y)
    err_ggml = rel_rmse(x, qf.dequantize_rows(type_name, qf.quantize_rows(type_name, x, imatrix), x.shape[1]))
    # plain round-to-nearest: somewhat worse than ggml's searches, never far off
    assert err_rtn <= 1.3 * err_ggml
    assert err_rtn < {"Q2_K": 0.4, "Q3_K": 0.2, "Q4_K": 0.1, "Q5_K": 0.05, "Q6_K": 0.025}[type_name]


@pytest.mark.parametrize("type_name", KQUANTS)
def test_rtn_edge_rows(type_name):
    """Zero, constant, all-positive, all-negative and tiny rows go through pose/pack without nan or garbage."""
    rng = np.random.default_rng(3)
    rows = [
        np.zeros(512),
        np.full(512, 0.25),
        np.abs(rng.normal(0.5, 0.1, 512)),
        -np.abs(rng.normal(0.5, 0.1, 512)),
        rng.normal(0, 1e-30, 512),
        np.where(np.arange(512) < 256, 0.0, rng.normal(0, 1, 512)),
    ]
    x = np.array(rows, np.float32)
    y = qf.dequantize_rows(type_name, qf.quantize_rows(type_name, x, strategy="rtn"), 512)
    assert np.isfinite(y).all()
    assert np.array_equal(y[0], np.zeros(512, np.float32))
    bound = {"Q2_K": 0.5, "Q3_K": 0.3, "Q4_K": 0.15, "Q5_K": 0.08, "Q6_K": 0.04}[type_name]
    for r in (1, 2, 3, 5):
        assert rel_rmse(x[r], y[r]) < bound, r


@pytest.mark.parametrize("type_name", KQUANTS)
def test_pose_describes_sub_blocks(type_name):
    codec = get_registry().quant_type(type_name).load_codec()
    x = gauss(4, 512)
    imatrix = lognormal_imatrix(512)
    sub, kind, qmin, qmax = {
        "Q2_K": (16, "asymmetric", 0, 3), "Q3_K": (16, "symmetric", -4, 3), "Q4_K": (32, "asymmetric", 0, 15),
        "Q5_K": (32, "asymmetric", 0, 31), "Q6_K": (16, "symmetric", -32, 31),
    }[type_name]
    for im in (None, imatrix):
        p = codec.pose(x, im)
        assert (p.kind, p.qmin, p.qmax) == (kind, qmin, qmax)
        assert p.x.shape == p.w.shape == (x.size // sub, sub)
        assert p.x.dtype == p.w.dtype == np.float32
        np.testing.assert_array_equal(p.x.ravel(), x.ravel())
        assert (p.w >= 0).all() and np.isfinite(p.w).all()
    # Q6_K weighs by the raw imatrix, as its imatrix search does
    if type_name == "Q6_K":
        np.testing.assert_array_equal(codec.pose(x, imatrix).w, np.tile(imatrix, 4).reshape(-1, 16))


# decoding a block into its generic solution (numpy, independent of the kernels)


def f16(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view(np.float16).astype(np.float32).ravel()


def scale_min_k4(sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 12) packed bytes -> (n, 8) scales and mins (get_scale_min_k4)."""
    sc = sc.astype(np.int32)
    d = np.concatenate([sc[:, 0:4] & 63, (sc[:, 8:12] & 0xF) | ((sc[:, 0:4] >> 6) << 4)], axis=1)
    m = np.concatenate([sc[:, 4:8] & 63, (sc[:, 8:12] >> 4) | ((sc[:, 4:8] >> 6) << 4)], axis=1)
    return d, m


def two_bit(qs: np.ndarray) -> np.ndarray:
    """(n, 64) -> (n, 256): element 128·h + 32·s + l in bits 2s of byte 32·h + l."""
    q = qs.astype(np.int32).reshape(-1, 2, 1, 32) >> (2 * np.arange(4)).reshape(1, 1, 4, 1)
    return (q & 3).reshape(-1, QK_K)


def decode_solution(type_name: str, data: np.ndarray) -> BlockSolution:
    """Bytes -> per-sub-block d (and m) and integer quants q: the solution that ``pack`` should write back."""
    b = data.reshape(-1, get_registry().quant_type(type_name).type_size)
    n = b.shape[0]
    if type_name == "Q2_K":
        sc = b[:, :16].astype(np.int32)
        d = f16(b[:, 80:82])[:, None] * (sc & 0xF)
        m = -(f16(b[:, 82:84])[:, None] * (sc >> 4))
        return BlockSolution(d.astype(np.float32), two_bit(b[:, 16:80]), m.astype(np.float32))
    if type_name == "Q3_K":
        raw = b[:, 96:108].astype(np.int32)
        lo = np.concatenate([raw[:, :8] & 0xF, raw[:, :8] >> 4], axis=1)
        hi = (raw[:, 8:12].reshape(n, 1, 4) >> (2 * np.arange(4)).reshape(1, 4, 1)).reshape(n, 16) & 3
        d = f16(b[:, 108:110])[:, None] * ((lo | (hi << 4)) - 32)
        hbit = (b[:, :32].astype(np.int32).reshape(n, 1, 32) >> np.arange(8).reshape(1, 8, 1)) & 1
        q = two_bit(b[:, 32:96]) + 4 * hbit.reshape(n, QK_K) - 4
        return BlockSolution(d.astype(np.float32), q)
    if type_name in ("Q4_K", "Q5_K"):
        sc, mn = scale_min_k4(b[:, 4:16])
        d = f16(b[:, 0:2])[:, None] * sc
        m = -(f16(b[:, 2:4])[:, None] * mn)
        qs = b[:, 16:] if type_name == "Q4_K" else b[:, 48:]
        q = (qs.astype(np.int32).reshape(n, 4, 1, 32) >> np.array([0, 4]).reshape(1, 1, 2, 1)) & 0xF
        q = q.reshape(n, QK_K)
        if type_name == "Q5_K":
            qh = (b[:, 16:48].astype(np.int32).reshape(n, 1, 32) >> np.arange(8).reshape(1, 8, 1)) & 1
            q = q + 16 * qh.reshape(n, QK_K)
        return BlockSolution(d.astype(np.float32), q, m.astype(np.float32))
    ql = b[:, :128].astype(np.int32).reshape(n, 2, 1, 64) >> np.array([0, 4]).reshape(1, 1, 2, 1)
    ql = (ql & 0xF).reshape(n, 2, 4, 32)
    qh = (b[:, 128:192].astype(np.int32).reshape(n, 2, 1, 32) >> (2 * np.arange(4)).reshape(1, 1, 4, 1)) & 3
    q = (ql | (qh << 4)).reshape(n, QK_K) - 32
    d = f16(b[:, 208:210])[:, None] * b[:, 192:208].view(np.int8)
    return BlockSolution(d.astype(np.float32), q)


@pytest.mark.parametrize("type_name", KQUANTS)
def test_pack_of_a_decoded_block_is_the_block(type_name):
    """Values that a K-quant can represent exactly (ggml's own output, dequantized) come back exactly from posing
    them and packing the decoded solution: the stored-scale refinement finds a zero-error encoding."""
    codec = get_registry().quant_type(type_name).load_codec()
    x = gauss(8, 1024, seed=7)
    x[1, :256] = 0.0  # a zero super-block
    x[2, :16] = 0.0  # a zero sub-block
    data = qf.quantize_rows(type_name, x)
    y = qf.dequantize_rows(type_name, data, x.shape[1])
    problem = codec.pose(y, None)
    solution = decode_solution(type_name, data)
    packed = codec.pack(y, None, problem, solution)
    np.testing.assert_array_equal(qf.dequantize_rows(type_name, packed, x.shape[1]), y)


@pytest.mark.parametrize("type_name", KQUANTS)
def test_decoded_solution_matches_dequantize(type_name):
    """The test's own layout reading agrees with the kernels' dequantizer (so the round trip above means something)."""
    x = gauss(4, 512, seed=9)
    data = qf.quantize_rows(type_name, x, lognormal_imatrix(512))
    s = decode_solution(type_name, data)
    sub = 16 if type_name in ("Q2_K", "Q3_K", "Q6_K") else 32
    q = s.q.reshape(-1, sub).astype(np.float32)
    y = s.d.reshape(-1, 1) * q + (0 if s.m is None else s.m.reshape(-1, 1))
    np.testing.assert_allclose(y.reshape(x.shape), qf.dequantize_rows(type_name, data, 512), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# fuzz against llama.cpp's C quantizers


def _cggml():
    from cggml import CGGML

    c = CGGML.load()
    if c is None:
        pytest.skip("libggml-base (llama-cpp-python) not available; set QF_LIBGGML_BASE")
    return c


def fuzz_rows(kind: int, rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """Assorted distributions and magnitudes: ties, zeros, outliers, overflow-prone and subnormal values."""
    shape = (rows, n)
    if kind == 0:
        return rng.normal(0, 0.02, shape)
    if kind == 1:
        return rng.standard_t(2, shape) * 0.01
    if kind == 2:
        return rng.uniform(-1, 1, shape) * 10.0 ** rng.integers(-30, 30)
    if kind == 3:
        return rng.normal(0, 1, shape) * (rng.random(shape) < 0.3)
    if kind == 4:
        return np.round(rng.normal(0, 3, shape))
    if kind == 5:
        return np.abs(rng.normal(0.5, 0.1, shape))
    if kind == 6:
        return -np.abs(rng.normal(0.5, 0.1, shape))
    if kind == 7:
        return rng.integers(-2, 3, shape) * 0.25
    if kind == 8:
        return rng.normal(0, 1, shape) * 10.0 ** rng.integers(30, 38)
    if kind == 9:
        return rng.normal(0, 1, shape) * 10.0 ** rng.integers(-40, 38, shape).astype(float)
    if kind == 10:
        return rng.normal(0, 1, shape) * 1e-40
    return np.full(shape, rng.normal())


def fuzz_imatrix(kind: int, rng: np.random.Generator, n: int) -> np.ndarray | None:
    if kind == 0:
        return None
    if kind == 1:
        im = rng.lognormal(0, 1, n)
    elif kind == 2:
        im = rng.lognormal(0, 2, n) * (rng.random(n) < 0.7)  # zeros
    else:
        im = np.where(rng.random(n) < 0.01, 1e6, rng.lognormal(0, 1, n))  # spikes
    return im.astype(np.float32)


def fuzz_inputs(seed: int):
    rng = np.random.default_rng(seed)
    for kind in range(12):
        rows, n = int(rng.integers(1, 4)), QK_K * int(rng.integers(1, 4))
        with np.errstate(all="ignore"):
            x = np.nan_to_num(fuzz_rows(kind, rng, rows, n).astype(np.float32), posinf=3e38, neginf=-3e38)
        for im_kind in range(4):
            yield kind, im_kind, x, fuzz_imatrix(im_kind, rng, n)


@pytest.mark.parametrize("type_name", KQUANTS)
def test_fuzz_against_ggml(type_name):
    c = _cggml()
    type_id = get_registry().quant_type(type_name).type_id
    size = get_registry().quant_type(type_name).type_size
    failures = []
    for seed in range(3):
        for kind, im_kind, x, imatrix in fuzz_inputs(seed):
            ours = qf.quantize_rows(type_name, x, imatrix)
            ref = c.quantize(type_id, x, imatrix)
            if not np.array_equal(ours, ref):
                bad = np.flatnonzero((ours.reshape(-1, size) != ref.reshape(-1, size)).any(axis=1))
                failures.append(f"seed {seed} kind {kind} imatrix {im_kind}: {bad.size} blocks differ, first #{bad[0]}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("type_name", KQUANTS)
def test_dequantize_random_bytes_like_ggml(type_name):
    """Any bytes (finite fp16 scales) decode exactly as ggml's to_float does."""
    c = _cggml()
    qtype = get_registry().quant_type(type_name)
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, (6, 4 * qtype.type_size), dtype=np.uint8)
    blocks = data.reshape(-1, qtype.type_size)
    halves = {"Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}[type_name]
    for o in halves:  # keep the fp16 scales finite and moderate
        blocks[:, o + 1] &= 0x3F
    ours = qf.dequantize_rows(type_name, data, 4 * QK_K)
    ref = c.dequantize(qtype.type_id, data, 4 * QK_K)
    np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32))
