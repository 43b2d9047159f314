"""llama.cpp's reference quantizers for the legacy types (``quantize_row_q{4_0,4_1,5_0,5_1,8_0}_ref`` in
ggml-quants.c, the path ``ggml_quantize_chunk`` takes without an imatrix), written again in plain numpy float32,
line by line, independently of qf's kernels.  tests/plugins/quants/test_legacy_ties.py proves it against the golden
bytes, then uses it where the golden data has no case: exact rounding ties.

C's idioms, as numpy: every intermediate is float32 (numpy keeps float32 op float32 in float32, correctly rounded,
as C without FMA does); ``(int8_t)f`` truncates toward zero; ``roundf`` rounds half away from zero (numpy's
``round``/``rint`` round half to even: never used here); ``GGML_FP32_TO_FP16`` rounds to nearest even like
numpy's ``astype(float16)``.
"""

from __future__ import annotations

import numpy as np

QK = 32
F32 = np.float32


def c_roundf(v: np.ndarray) -> np.ndarray:
    """C ``roundf``: half away from zero (exact in float32: |v - trunc(v)| is exact)."""
    v = np.asarray(v, F32)
    t = np.trunc(v)
    return np.where(np.abs(v - t) >= F32(0.5), t + np.sign(v), t).astype(F32)


def c_trunc_int(v: np.ndarray) -> np.ndarray:
    """``(int8_t)v`` for v in int8 range: truncation toward zero."""
    return np.trunc(np.asarray(v, F32)).astype(np.int64)


def fp16_bytes(v: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.asarray(v, F32).astype(np.float16).reshape(-1, 1).view(np.uint8)


def _blocks(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, F32)
    assert x.ndim == 2 and x.shape[1] % QK == 0
    return x.reshape(-1, QK)


def _signed_amax(b: np.ndarray) -> np.ndarray:
    """``if (amax < fabsf(v)) { amax = fabsf(v); max = v; }`` from ``max = 0.0f``: the first value of largest
    magnitude, with its sign (+0.0 for a block of zeros, whatever their signs)."""
    first = b[np.arange(b.shape[0]), np.argmax(np.abs(b), axis=1)]  # argmax: first occurrence, as the strict '<'
    return np.where(first == 0, F32(0.0), first).astype(F32)


def _inverse(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d != 0, F32(1.0) / np.where(d != 0, d, F32(1.0)), F32(0.0)).astype(F32)


def _nibbles(q: np.ndarray) -> np.ndarray:
    """qs[j] = q[j] | q[j + 16] << 4."""
    return (q[:, :16] & 0xF | (q[:, 16:] & 0xF) << 4).astype(np.uint8)


def _qh(q: np.ndarray) -> np.ndarray:
    """The fifth bits: bit j of a little-endian uint32 is bit 4 of q[j]."""
    bits = ((q >> 4) & 1).astype(np.uint64) << np.arange(QK, dtype=np.uint64)
    return bits.sum(axis=1).astype("<u4").reshape(-1, 1).view(np.uint8)


def quantize_q8_0(x: np.ndarray) -> np.ndarray:
    b = _blocks(x)
    amax = np.abs(b).max(axis=1)
    d = (amax / F32(127)).astype(F32)
    q = c_roundf(b * _inverse(d)[:, None]).astype(np.int64)
    return np.hstack([fp16_bytes(d), (q & 0xFF).astype(np.uint8)]).reshape(x.shape[0], -1)


def _type0(x: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    b = _blocks(x)
    half = 1 << (bits - 1)
    d = (_signed_amax(b) / F32(-half)).astype(F32)
    q = c_trunc_int(b * _inverse(d)[:, None] + F32(half + 0.5))
    return d, np.minimum((1 << bits) - 1, q)


def _type1(x: np.ndarray, bits: int, clamp: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    b = _blocks(x)
    rows = np.arange(b.shape[0])  # ``if (v < min) min = v;``: the first of equal minima (-0.0 vs 0.0), likewise max
    lo, hi = b[rows, np.argmin(b, axis=1)], b[rows, np.argmax(b, axis=1)]
    d = ((hi - lo) / F32((1 << bits) - 1)).astype(F32)
    q = c_trunc_int((b - lo[:, None]) * _inverse(d)[:, None] + F32(0.5))
    return d, lo, (np.minimum((1 << bits) - 1, q) if clamp else q)


def quantize_q4_0(x: np.ndarray) -> np.ndarray:
    d, q = _type0(x, 4)
    return np.hstack([fp16_bytes(d), _nibbles(q)]).reshape(x.shape[0], -1)


def quantize_q5_0(x: np.ndarray) -> np.ndarray:
    d, q = _type0(x, 5)
    return np.hstack([fp16_bytes(d), _qh(q), _nibbles(q)]).reshape(x.shape[0], -1)


def quantize_q4_1(x: np.ndarray) -> np.ndarray:
    d, m, q = _type1(x, 4, clamp=True)
    return np.hstack([fp16_bytes(d), fp16_bytes(m), _nibbles(q)]).reshape(x.shape[0], -1)


def quantize_q5_1(x: np.ndarray) -> np.ndarray:
    d, m, q = _type1(x, 5, clamp=False)
    return np.hstack([fp16_bytes(d), fp16_bytes(m), _qh(q), _nibbles(q)]).reshape(x.shape[0], -1)


QUANTIZE = {"Q4_0": quantize_q4_0, "Q4_1": quantize_q4_1, "Q5_0": quantize_q5_0, "Q5_1": quantize_q5_1,
            "Q8_0": quantize_q8_0}
