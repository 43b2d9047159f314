"""numba kernels for the 2026 low-bit types Q1_0 (1 bit, blocks of 128) and Q2_0 (2 bits, blocks of 64).

Byte-exact with ggml's ``quantize_row_q1_0_ref`` / ``quantize_row_q2_0_ref`` (the imatrix is ignored).  ``x`` is
float32 ``(rows, n_per_row)``, ``out`` uint8 ``(rows, row_bytes)``.

Q1_0: d = Σ|x|/128 (summed in order), bit j set when x_j >= 0; decodes to ±d.
Q2_0: d = max|x|, code = clamp(roundf(x/d) + 1, 0, 3), four codes per byte from the low bits; decodes to (code-1)·d.
With id = 1/d, |x·id| <= 1 (+1 ulp), so roundf is a pair of comparisons with ±0.5; when 1/d overflows, x·id is ±inf or
NaN, whose int conversion (INT_MIN) + 1 clamps to code 0.
"""

from __future__ import annotations

import numpy as np

from qf.kernels import F32, bits_f32, f32_bits, get_f16, jit, put_f16

Q1_QK = 128
Q1_BYTES = 18
Q2_QK = 64
Q2_BYTES = 18
_INF = F32(np.inf)


@jit
def quantize_q1_0(x, out):
    n, k = x.shape
    for r in range(n):
        for ib in range(k // Q1_QK):
            base = ib * Q1_QK
            o = ib * Q1_BYTES
            sum_abs = F32(0.0)
            for j in range(Q1_QK):
                sum_abs += abs(x[r, base + j])
            put_f16(out, r, o, sum_abs / F32(Q1_QK))
            for i in range(Q1_QK // 8):
                b = 0
                for j in range(8):
                    b |= np.int64(x[r, base + 8 * i + j] >= F32(0.0)) << j
                out[r, o + 2 + i] = b


@jit
def quantize_q2_0(x, out):
    n, k = x.shape
    for r in range(n):
        for ib in range(k // Q2_QK):
            base = ib * Q2_QK
            o = ib * Q2_BYTES
            m = np.uint32(0)
            for j in range(Q2_QK):
                m = max(m, f32_bits(x[r, base + j]) & np.uint32(0x7FFFFFFF))
            d = bits_f32(m)
            inv = F32(1.0) / d if d > F32(0.0) else F32(0.0)
            put_f16(out, r, o, d)
            if inv == _INF:
                for i in range(Q2_QK // 4):
                    out[r, o + 2 + i] = 0
                continue
            for i in range(Q2_QK // 4):
                b = 0
                for j in range(4):
                    v = x[r, base + 4 * i + j] * inv
                    code = 1 + np.int64(v >= F32(0.5)) - np.int64(v <= F32(-0.5))
                    b |= code << (2 * j)
                out[r, o + 2 + i] = b


# ---------------------------------------------------------------------------------------------------------------------
# packing of generic solutions


@jit
def pack_q1_0(x, w, d, q, out):
    """Signs from the solution (q indexes the table (-1, +1), negated when d < 0); the stored scale is the weighted
    least-squares one for those signs, d = Σw·x·s / Σw (the solution's |d| when the weights are all zero), so that a
    scale-only-by-extremes solver still yields a sane block.  A negative least-squares scale flips the signs."""
    n, nb = d.shape
    s = np.empty(Q1_QK, np.int64)
    for r in range(n):
        for ib in range(nb):
            base = ib * Q1_QK
            o = ib * Q1_BYTES
            flip = 1 if d[r, ib] < F32(0.0) else 0
            num = 0.0
            den = 0.0
            for j in range(Q1_QK):
                s[j] = (np.int64(q[r, ib, j]) & 1) ^ flip
                wj = np.float64(w[r, base + j])
                num += wj * np.float64(x[r, base + j]) * (1.0 if s[j] else -1.0)
                den += wj
            scale = F32(num / den) if den > 0.0 else abs(d[r, ib])
            if scale < F32(0.0):
                scale = -scale
                for j in range(Q1_QK):
                    s[j] ^= 1
            put_f16(out, r, o, scale)
            for i in range(Q1_QK // 8):
                b = 0
                for j in range(8):
                    b |= s[8 * i + j] << j
                out[r, o + 2 + i] = b


@jit
def pack_q2_0(d, q, out):
    """d per block, q in [-1, 2] stored as q + 1."""
    n, nb = d.shape
    for r in range(n):
        for ib in range(nb):
            o = ib * Q2_BYTES
            put_f16(out, r, o, d[r, ib])
            for i in range(Q2_QK // 4):
                b = 0
                for j in range(4):
                    b |= ((np.int64(q[r, ib, 4 * i + j]) + 1) & 3) << (2 * j)
                out[r, o + 2 + i] = b


# ---------------------------------------------------------------------------------------------------------------------
# dequantization (ggml's dequantize_row_q1_0 / q2_0)


@jit
def dequantize_q1_0(data, k, out):
    n = data.shape[0]
    for r in range(n):
        for ib in range(k // Q1_QK):
            o = ib * Q1_BYTES
            d = get_f16(data, r, o)
            for j in range(Q1_QK):
                bit = (data[r, o + 2 + j // 8] >> (j % 8)) & 1
                out[r, ib * Q1_QK + j] = d if bit else -d


@jit
def dequantize_q2_0(data, k, out):
    n = data.shape[0]
    for r in range(n):
        for ib in range(k // Q2_QK):
            o = ib * Q2_BYTES
            d = get_f16(data, r, o)
            for j in range(Q2_QK):
                code = (np.int64(data[r, o + 2 + j // 4]) >> (2 * (j % 4))) & 3
                out[r, ib * Q2_QK + j] = F32(code - 1) * d
