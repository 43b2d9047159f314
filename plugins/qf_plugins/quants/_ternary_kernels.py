"""numba kernels for the ternary types TQ1_0 and TQ2_0 (BitNet b1.58 / TriLM weights), super-blocks of 256.

Byte-exact with ggml's ``quantize_row_tq1_0_ref`` / ``quantize_row_tq2_0_ref`` (the imatrix is ignored): d = max|x|
as fp16, q = lroundf(x / d) in {-1, 0, 1}.  ``x`` is float32 ``(rows, n_per_row)``, ``out`` uint8
``(rows, row_bytes)``.

Rounding: with id = 1/d every |x·id| is at most 1 (+1 ulp), so lroundf is a pair of comparisons with ±0.5.  When d
is so small that 1/d overflows, x·id is ±inf or NaN and glibc's lroundf returns LONG_MIN there, which ``+ 1``
truncated to int turns into 1 — the trit 0 for every element.
"""

from __future__ import annotations

import numpy as np

from qf.kernels import F32, bits_f32, f32_bits, get_f16, inline, jit, put_f16

QK_K = 256
TQ1_BYTES = 54
TQ2_BYTES = 66
_INF = F32(np.inf)


@inline
def _amax(x, r, base):
    """max |x| over the super-block (compared as IEEE bits: order-free, so it vectorizes)."""
    m = np.uint32(0)
    for j in range(QK_K):
        b = f32_bits(x[r, base + j]) & np.uint32(0x7FFFFFFF)
        m = max(m, b)
    return bits_f32(m)


@inline
def _trits(x, r, base, L):
    """L[j] = lroundf(x·(1/d)) + 1 in {0, 1, 2}; returns d = max|x|."""
    d = _amax(x, r, base)
    inv = F32(1.0) / d if d != F32(0.0) else F32(0.0)
    if inv == _INF:
        for j in range(QK_K):
            L[j] = 1
        return d
    for j in range(QK_K):
        v = x[r, base + j] * inv
        L[j] = 1 + np.int8(v >= F32(0.5)) - np.int8(v <= F32(-0.5))
    return d


@inline
def _ceil243(q):
    """Fixed-point (base-3 fraction) form of 5 trits: ceil(q·256/243)."""
    return (q * 256 + 242) // 243


@inline
def _pack_tq1(L, out, r, o):
    for m in range(32):  # elements 0..159: 5 trits per byte, stride 32
        q = 0
        for n in range(5):
            q = q * 3 + L[m + 32 * n]
        out[r, o + m] = _ceil243(q)
    for m in range(16):  # elements 160..239: stride 16
        q = 0
        for n in range(5):
            q = q * 3 + L[160 + m + 16 * n]
        out[r, o + 32 + m] = _ceil243(q)
    for j in range(4):  # elements 240..255: 4 trits per byte (qh), stride 4, shifted to the top trit
        q = 0
        for m in range(4):
            q = q * 3 + L[240 + j + 4 * m]
        out[r, o + 48 + j] = _ceil243(q * 3)


@inline
def _pack_tq2(L, out, r, o):
    for h in range(2):
        for m in range(32):
            b = 128 * h + m
            out[r, o + 32 * h + m] = L[b] | (L[b + 32] << 2) | (L[b + 64] << 4) | (L[b + 96] << 6)


@jit
def quantize_tq1_0(x, out):
    n, k = x.shape
    L = np.empty(QK_K, np.int64)
    for r in range(n):
        for ib in range(k // QK_K):
            o = ib * TQ1_BYTES
            d = _trits(x, r, ib * QK_K, L)
            _pack_tq1(L, out, r, o)
            put_f16(out, r, o + 52, d)


@jit
def quantize_tq2_0(x, out):
    n, k = x.shape
    L = np.empty(QK_K, np.int64)
    for r in range(n):
        for ib in range(k // QK_K):
            o = ib * TQ2_BYTES
            d = _trits(x, r, ib * QK_K, L)
            _pack_tq2(L, out, r, o)
            put_f16(out, r, o + 64, d)


# ---------------------------------------------------------------------------------------------------------------------
# packing of generic solutions (d per super-block, q in {-1, 0, 1}); stored with d >= 0 as ggml does


@inline
def _solution_trits(d, q, r, ib, L):
    s = -1 if d[r, ib] < F32(0.0) else 1
    for j in range(QK_K):
        L[j] = s * np.int64(q[r, ib, j]) + 1
    return abs(d[r, ib])


@jit
def pack_tq1_0(d, q, out):
    n, nb = d.shape
    L = np.empty(QK_K, np.int64)
    for r in range(n):
        for ib in range(nb):
            o = ib * TQ1_BYTES
            ad = _solution_trits(d, q, r, ib, L)
            _pack_tq1(L, out, r, o)
            put_f16(out, r, o + 52, ad)


@jit
def pack_tq2_0(d, q, out):
    n, nb = d.shape
    L = np.empty(QK_K, np.int64)
    for r in range(n):
        for ib in range(nb):
            o = ib * TQ2_BYTES
            ad = _solution_trits(d, q, r, ib, L)
            _pack_tq2(L, out, r, o)
            put_f16(out, r, o + 64, ad)


# ---------------------------------------------------------------------------------------------------------------------
# dequantization (ggml's dequantize_row_tq1_0 / tq2_0)


@inline
def _top_trit(b, p):
    """The trit a base-3 fixed-point byte holds after multiplying by 3**p (uint8 wrap-around)."""
    q = (b * p) & 0xFF
    return (q * 3) >> 8


@jit
def dequantize_tq1_0(data, k, out):
    n = data.shape[0]
    for r in range(n):
        for ib in range(k // QK_K):
            o = ib * TQ1_BYTES
            base = ib * QK_K
            d = get_f16(data, r, o + 52)
            p = 1
            for t in range(5):
                for m in range(32):
                    out[r, base + 32 * t + m] = F32(_top_trit(np.int64(data[r, o + m]), p) - 1) * d
                for m in range(16):
                    out[r, base + 160 + 16 * t + m] = F32(_top_trit(np.int64(data[r, o + 32 + m]), p) - 1) * d
                p *= 3
            p = 1
            for t in range(4):
                for j in range(4):
                    out[r, base + 240 + 4 * t + j] = F32(_top_trit(np.int64(data[r, o + 48 + j]), p) - 1) * d
                p *= 3


@jit
def dequantize_tq2_0(data, k, out):
    n = data.shape[0]
    for r in range(n):
        for ib in range(k // QK_K):
            o = ib * TQ2_BYTES
            base = ib * QK_K
            d = get_f16(data, r, o + 64)
            for h in range(2):
                for l in range(4):
                    for m in range(32):
                        q = (np.int64(data[r, o + 32 * h + m]) >> (2 * l)) & 3
                        out[r, base + 128 * h + 32 * l + m] = F32(q - 1) * d
