"""numba kernels for the 32-element legacy types Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.

Byte-exact with ggml's ``quantize_row_*_ref`` (no imatrix) and ``quantize_row_*_impl`` (imatrix) — see
qf.kernels for the float32 rules.  Arrays in, arrays out: ``x`` is float32 ``(rows, n_per_row)``, ``out`` uint8
``(rows, row_bytes)``.
"""

from __future__ import annotations

import numpy as np

from qf.kernels import F32, f32_bits, fp32_to_fp16, get_f16, inline, jit, opaque, put_f16, roundf
from qf_plugins.quants._refine_kernels import NO_TABLE, refine_block_scale, scratch
from qf_plugins.quants._search_kernels import (
    CANDIDATE_LANES,
    GROUP_LANES,
    QKX_ROWS,
    make_qkx_quants_jit,
    make_qx_quants,
    qkx_lanes,
    qkx_result,
)

QK = 32
ABS_BITS = np.uint32(0x7FFFFFFF)


@inline
def _pack_nibbles(out, r, o, L, off):
    for j in range(16):
        out[r, o + j] = (L[j] + off) | ((L[j + 16] + off) << 4)


@inline
def _pack_q5(out, r, o, L, off):
    """qh (4 bytes, bit j = bit 4 of q_j) then qs (16 bytes of low nibbles)."""
    qh = 0
    for j in range(16):
        q0 = L[j] + off
        q1 = L[j + 16] + off
        out[r, o + 4 + j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4)
        qh |= ((q0 & 0x10) >> 4) << j
        qh |= ((q1 & 0x10) >> 4) << (j + 16)
    out[r, o] = qh & 0xFF
    out[r, o + 1] = (qh >> 8) & 0xFF
    out[r, o + 2] = (qh >> 16) & 0xFF
    out[r, o + 3] = (qh >> 24) & 0xFF


# ---------------------------------------------------------------------------------------------------------------------
# imatrix weights and block scans (the scale searches themselves are shared: _search_kernels)


@inline
def _row_sigma2(x, r, k):
    s = F32(0.0)
    for j in range(k):
        s += x[r, j] * x[r, j]
    return s / F32(k)


@inline
def _legacy_weights(x, r, base, qw, sigma2, weight):
    for j in range(QK):
        xv = x[r, base + j]
        weight[j] = qw[base + j] * np.sqrt(sigma2 + xv * xv)


@inline
def _signed_absmax(xr, base):
    """(max, |bits| max) over a 32-block: the value with the largest magnitude, its first occurrence deciding the
    sign (`if (amax < fabsf(v)) { amax = fabsf(v); max = v; }`), and the largest |bits| (finiteness check)."""
    amax = F32(0.0)
    mx = F32(0.0)
    top = np.uint32(0)
    for j in range(QK):
        v = xr[base + j]
        top = max(top, f32_bits(v) & ABS_BITS)
        if amax < abs(v):
            amax = abs(v)
            mx = v
    return mx, top


@inline
def _minmax(xr, base):
    """(min, max, |bits| max) over a 32-block as `if (v < min) min = v; if (v > max) max = v;` from ±FLT_MAX scans it.

    Two chains each; the values agree with the single scan except for the sign of a zero extremum (the first zero
    wins in C), so a zero extremum is recomputed by the plain scan."""
    mn0 = xr[base]
    mx0 = mn0
    mn1 = xr[base + 1]
    mx1 = mn1
    t0 = f32_bits(mn0) & ABS_BITS
    t1 = f32_bits(mn1) & ABS_BITS
    for j in range(2, QK, 2):
        v0 = xr[base + j]
        v1 = xr[base + j + 1]
        mn0 = v0 if v0 < mn0 else mn0
        mx0 = v0 if v0 > mx0 else mx0
        mn1 = v1 if v1 < mn1 else mn1
        mx1 = v1 if v1 > mx1 else mx1
        t0 = max(t0, f32_bits(v0) & ABS_BITS)
        t1 = max(t1, f32_bits(v1) & ABS_BITS)
    mn = mn1 if mn1 < mn0 else mn0
    mx = mx1 if mx1 > mx0 else mx0
    if mn == F32(0.0) or mx == F32(0.0):
        mn = F32(3.4028234663852886e38)
        mx = F32(-3.4028234663852886e38)
        for j in range(QK):
            v = xr[base + j]
            if v < mn:
                mn = v
            if v > mx:
                mx = v
    return mn, mx, max(t0, t1)


# ---------------------------------------------------------------------------------------------------------------------
# Q4_0: d f16, qs[16]


@jit
def quantize_q4_0(x, out):
    n, k = x.shape
    top = np.uint32(0)
    half = opaque(QK // 2)  # a bound LLVM cannot see: the loop is vectorized instead of unrolled
    for r in range(n):
        xr = x[r]
        orow = out[r]
        for ib in range(k // QK):
            base = ib * QK
            mx, t = _signed_absmax(xr, base)
            top = max(top, t)
            d = mx / F32(-8.0)
            idv = F32(1.0) / d if d != F32(0.0) else F32(0.0)
            o = ib * 18
            h = fp32_to_fp16(d)
            orow[o] = h & 0xFF
            orow[o + 1] = h >> 8
            for j in range(half):  # (int8_t)(x*id + 8.5f): values in [0.5, 16.5], so truncation
                q0 = min(np.int32(15), np.int32(xr[base + j] * idv + F32(8.5)))
                q1 = min(np.int32(15), np.int32(xr[base + 16 + j] * idv + F32(8.5)))
                orow[o + 2 + j] = np.uint8(q0 | (q1 << 4))
    return top


@jit
def _quantize_type0_imatrix(x, qw, out, nbits):
    """Q4_0 / Q5_0 with an imatrix: make_qx_quants(32, 2**(nbits-1), x, L, 1, qw·sqrt(σ²+x²)) per block."""
    n, k = x.shape
    weight = np.empty(QK, np.float32)
    L = np.empty(QK, np.int64)
    S = np.empty(3 * CANDIDATE_LANES, np.float32)
    bsize = 2 + QK // 2 + (4 if nbits == 5 else 0)
    for r in range(n):
        sigma2 = _row_sigma2(x, r, k)
        xr = x[r]
        for ib in range(k // QK):
            base = ib * QK
            _legacy_weights(x, r, base, qw, sigma2, weight)
            d = make_qx_quants(QK, 1 << (nbits - 1), xr, base, L, 0, weight, 0, S)
            o = ib * bsize
            put_f16(out, r, o, d)
            if nbits == 4:
                _pack_nibbles(out, r, o + 2, L, 0)
            else:
                _pack_q5(out, r, o + 2, L, 0)


@jit
def quantize_q4_0_imatrix(x, qw, out):
    _quantize_type0_imatrix(x, qw, out, 4)


# ---------------------------------------------------------------------------------------------------------------------
# Q4_1: d, m f16, qs[16]


@jit
def quantize_q4_1(x, out):
    n, k = x.shape
    top = np.uint32(0)
    half = opaque(QK // 2)  # a bound LLVM cannot see: the loop is vectorized instead of unrolled
    for r in range(n):
        xr = x[r]
        orow = out[r]
        for ib in range(k // QK):
            base = ib * QK
            mn, mx, t = _minmax(xr, base)
            top = max(top, t)
            d = (mx - mn) / F32(15.0)
            idv = F32(1.0) / d if d != F32(0.0) else F32(0.0)
            o = ib * 20
            h = fp32_to_fp16(d)
            orow[o] = h & 0xFF
            orow[o + 1] = h >> 8
            h = fp32_to_fp16(mn)
            orow[o + 2] = h & 0xFF
            orow[o + 3] = h >> 8
            for j in range(half):
                q0 = min(np.int32(15), np.int32((xr[base + j] - mn) * idv + F32(0.5)))
                q1 = min(np.int32(15), np.int32((xr[base + 16 + j] - mn) * idv + F32(0.5)))
                orow[o + 4 + j] = np.uint8(q0 | (q1 << 4))
    return top


@jit
def _quantize_type1_imatrix(x, qw, out, nbits):
    """Q4_1 / Q5_1 with an imatrix: make_qkx3_quants(32, 2**nbits - 1, x, qw·sqrt(σ²+x²), ..., -0.9, 0.05, 36) per
    block, run on GROUP_LANES blocks at once by the lane search (bit-identical; degenerate lanes redone by the scalar
    one)."""
    n, k = x.shape
    nb = k // QK
    nmax = (1 << nbits) - 1
    bsize = 4 + QK // 2 + (4 if nbits == 5 else 0)
    sigma2 = np.empty(n, np.float32)
    for r in range(n):
        sigma2[r] = _row_sigma2(x, r, k)
    XT = np.empty(QK * GROUP_LANES, np.float32)
    WT = np.empty(QK * GROUP_LANES, np.float32)
    LT = np.empty(QK * GROUP_LANES, np.float32)
    V = np.zeros(QKX_ROWS * GROUP_LANES, np.float32)
    weight = np.empty(QK, np.float32)
    L = np.empty(QK, np.int64)
    Laux = np.empty(QK, np.int64)
    total = n * nb
    for b0 in range(0, total, GROUP_LANES):
        nl = min(GROUP_LANES, total - b0)
        for l in range(nl):
            r = (b0 + l) // nb
            base = (b0 + l) % nb * QK
            s2 = sigma2[r]
            for i in range(QK):
                xv = x[r, base + i]
                XT[i * GROUP_LANES + l] = xv
                WT[i * GROUP_LANES + l] = qw[base + i] * np.sqrt(s2 + xv * xv)
        qkx_lanes(nl, QK, nmax, XT, WT, F32(-0.9), F32(0.05), 36, False, V, LT)
        for l in range(nl):
            r = (b0 + l) // nb
            ib = (b0 + l) % nb
            base = ib * QK
            found = qkx_result(V, l)
            if found.bad:
                _legacy_weights(x, r, base, qw, sigma2[r], weight)
                d, the_min = make_qkx_quants_jit(QK, nmax, x[r], base, weight, 0, L, 0, Laux, F32(-0.9), F32(0.05),
                                                 36, False)
                m = -the_min
            else:
                d = found.scale
                m = found.min
                for i in range(QK):
                    L[i] = np.int64(LT[i * GROUP_LANES + l])
            o = ib * bsize
            put_f16(out, r, o, d)
            put_f16(out, r, o + 2, m)
            if nbits == 4:
                _pack_nibbles(out, r, o + 4, L, 0)
            else:
                _pack_q5(out, r, o + 4, L, 0)


@jit
def quantize_q4_1_imatrix(x, qw, out):
    _quantize_type1_imatrix(x, qw, out, 4)


# ---------------------------------------------------------------------------------------------------------------------
# Q5_0: d f16, qh[4], qs[16]


@jit
def quantize_q5_0(x, out):
    n, k = x.shape
    L = np.empty(QK, np.int64)
    top = np.uint32(0)
    full = opaque(QK)  # a bound LLVM cannot see: the loop is vectorized instead of unrolled
    for r in range(n):
        xr = x[r]
        for ib in range(k // QK):
            base = ib * QK
            mx, t = _signed_absmax(xr, base)
            top = max(top, t)
            d = mx / F32(-16.0)
            idv = F32(1.0) / d if d != F32(0.0) else F32(0.0)
            o = ib * 22
            put_f16(out, r, o, d)
            for j in range(full):
                L[j] = min(np.int32(31), np.int32(xr[base + j] * idv + F32(16.5)))
            _pack_q5(out, r, o + 2, L, 0)
    return top


@jit
def quantize_q5_0_imatrix(x, qw, out):
    _quantize_type0_imatrix(x, qw, out, 5)


# ---------------------------------------------------------------------------------------------------------------------
# Q5_1: d, m f16, qh[4], qs[16]


@jit
def quantize_q5_1(x, out):
    n, k = x.shape
    L = np.empty(QK, np.int64)
    top = np.uint32(0)
    full = opaque(QK)  # a bound LLVM cannot see: the loop is vectorized instead of unrolled
    for r in range(n):
        xr = x[r]
        for ib in range(k // QK):
            base = ib * QK
            mn, mx, t = _minmax(xr, base)
            top = max(top, t)
            d = (mx - mn) / F32(31.0)
            idv = F32(1.0) / d if d != F32(0.0) else F32(0.0)
            o = ib * 24
            put_f16(out, r, o, d)
            put_f16(out, r, o + 2, mn)
            for j in range(full):
                # (uint8_t)(x + 0.5f): values are in [0, 31.5], so truncation
                L[j] = np.int32((xr[base + j] - mn) * idv + F32(0.5)) & 0xFF
            _pack_q5(out, r, o + 4, L, 0)
    return top


@jit
def quantize_q5_1_imatrix(x, qw, out):
    _quantize_type1_imatrix(x, qw, out, 5)


# ---------------------------------------------------------------------------------------------------------------------
# Q8_0: d f16, qs i8[32]  (the imatrix is ignored, as in ggml)


@jit
def quantize_q8_0(x, out):
    n, k = x.shape
    top = np.uint32(0)
    full = opaque(QK)  # a bound LLVM cannot see: the loop is vectorized instead of unrolled
    for r in range(n):
        xr = x[r]
        for ib in range(k // QK):
            base = ib * QK
            amax = F32(0.0)
            for j in range(QK):
                v = xr[base + j]
                top = max(top, f32_bits(v) & ABS_BITS)
                amax = max(amax, abs(v))
            d = amax / F32(127.0)
            idv = F32(1.0) / d if d != F32(0.0) else F32(0.0)
            o = ib * 34
            put_f16(out, r, o, d)
            for j in range(full):
                out[r, o + 2 + j] = np.int64(roundf(xr[base + j] * idv)) & 0xFF
    return top


# ---------------------------------------------------------------------------------------------------------------------
# packing of generic solutions (d per block, integer quants q in the problem's range)


@jit
def pack_symmetric(x, w, d, qmin, nbits, out):
    """Q4_0 / Q5_0 / Q8_0 layout from a solution's scales: the best fp16 scale near each (refine_block_scale), quants
    re-derived for it, stored as q - qmin (Q8_0: as int8)."""
    n, nb = d.shape
    qmax = -qmin - 1 if nbits < 8 else 127
    L = np.empty(QK, np.int64)
    q = np.empty(QK, np.int64)
    tmp = scratch(QK)
    bsize = 2 + (QK if nbits == 8 else QK // 2) + (4 if nbits == 5 else 0)
    for r in range(n):
        for ib in range(nb):
            o = ib * bsize
            dd, _ = refine_block_scale(x[r, ib * QK:(ib + 1) * QK], w[r, ib * QK:(ib + 1) * QK], d[r, ib], 0.0,
                                       False, qmin, qmax, NO_TABLE, q, tmp)
            put_f16(out, r, o, F32(dd))
            for j in range(QK):
                L[j] = q[j] - qmin
            if nbits == 4:
                _pack_nibbles(out, r, o + 2, L, 0)
            elif nbits == 5:
                _pack_q5(out, r, o + 2, L, 0)
            else:
                for j in range(QK):
                    out[r, o + 2 + j] = q[j] & 0xFF


@jit
def pack_asymmetric(x, w, d, m, nbits, out):
    """Q4_1 / Q5_1 layout from a solution x ≈ d·q + m: the best fp16 scale and offset near the solution's."""
    n, nb = d.shape
    qmax = (1 << nbits) - 1
    q = np.empty(QK, np.int64)
    tmp = scratch(QK)
    bsize = 4 + QK // 2 + (4 if nbits == 5 else 0)
    for r in range(n):
        for ib in range(nb):
            o = ib * bsize
            dd, mm = refine_block_scale(x[r, ib * QK:(ib + 1) * QK], w[r, ib * QK:(ib + 1) * QK], d[r, ib],
                                        m[r, ib], True, 0, qmax, NO_TABLE, q, tmp)
            put_f16(out, r, o, F32(dd))
            put_f16(out, r, o + 2, F32(mm))
            if nbits == 4:
                _pack_nibbles(out, r, o + 4, q, 0)
            else:
                _pack_q5(out, r, o + 4, q, 0)


# ---------------------------------------------------------------------------------------------------------------------
# dequantization (ggml's dequantize_row_*)


@jit
def dequantize_legacy(data, k, nbits, has_min, out):
    n = data.shape[0]
    bsize = 2 + (2 if has_min else 0) + (4 if nbits == 5 else 0) + (QK if nbits == 8 else QK // 2)
    for r in range(n):
        for ib in range(k // QK):
            o = ib * bsize
            d = get_f16(data, r, o)
            m = get_f16(data, r, o + 2) if has_min else F32(0.0)
            p = o + (4 if has_min else 2)
            base = ib * QK
            if nbits == 8:
                for j in range(QK):
                    qv = np.int64(data[r, p + j])
                    if qv >= 128:
                        qv -= 256
                    out[r, base + j] = F32(qv) * d
                continue
            qh = 0
            if nbits == 5:
                qh = (np.int64(data[r, p]) | (np.int64(data[r, p + 1]) << 8) | (np.int64(data[r, p + 2]) << 16)
                      | (np.int64(data[r, p + 3]) << 24))
                p += 4
            offset = 0 if has_min else (1 << (nbits - 1))
            for j in range(16):
                b = np.int64(data[r, p + j])
                q0 = (b & 0x0F) | (((qh >> j) & 1) << 4)
                q1 = (b >> 4) | (((qh >> (j + 16)) & 1) << 4)
                if has_min:
                    out[r, base + j] = F32(q0) * d + m
                    out[r, base + j + 16] = F32(q1) * d + m
                else:
                    out[r, base + j] = F32(q0 - offset) * d
                    out[r, base + j + 16] = F32(q1 - offset) * d
