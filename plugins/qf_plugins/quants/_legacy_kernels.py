"""numba kernels for the 32-element legacy types Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.

Byte-exact with ggml's ``quantize_row_*_ref`` (no imatrix) and ``quantize_row_*_impl`` (imatrix) — see
qf.numerics for the float32 rules.  Arrays in, arrays out: ``x`` is float32 ``(rows, n_per_row)``, ``out`` uint8
``(rows, row_bytes)``.
"""

from __future__ import annotations

import numpy as np

from qf.numerics import F32, fp16_to_fp32, fp32_to_fp16, inline, jit, nearest_int, roundf

QK = 32
GROUP_MAX_EPS = F32(1e-15)


@inline
def _put_f16(out, r, o, value):
    h = fp32_to_fp16(value)
    out[r, o] = h & 0xFF
    out[r, o + 1] = h >> 8


@inline
def _get_f16(data, r, o):
    return fp16_to_fp32(np.uint16(data[r, o]) | (np.uint16(data[r, o + 1]) << 8))


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
# search helpers (ggml-quants.c: make_qx_quants, make_qkx3_quants)


@inline
def _nint_small(fval):
    """nearest_int for |fval| < 2**22, without the range check (so loops over it vectorize)."""
    return np.int32(fval + F32(12582912.0)) - np.int32(12582912)


N_QX = 19  # make_qx_quants' candidate inverse scales: the plain one, then is = -9..-1, 1..9


@inline
def make_qx_quants_w(n, nmax, x, L, qw, iscales, sumlx, suml2):
    """make_qx_quants(n, nmax, x, L, rmin_type=1, qw): returns the scale, writes L in [0, 2*nmax).

    The 19 candidate scales are independent, so their sums are accumulated together (each in element order, as C
    does) and the winner is then picked in C's order; the result is bit-identical and the sums no longer form one
    long dependency chain.  |iscale * x| <= nmax + 0.9 here, so the +12582912 trick needs no range check."""
    mx = F32(0.0)
    amax = F32(0.0)
    for i in range(n):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            mx = x[i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return F32(0.0)
    fnmax = F32(nmax)
    iscales[0] = -fnmax / mx
    c = 1
    for is_ in range(-9, 10):
        if is_ != 0:
            iscales[c] = -(fnmax + F32(0.1) * F32(is_)) / mx
            c += 1
    for c in range(N_QX):
        sumlx[c] = F32(0.0)
        suml2[c] = F32(0.0)
    lo = np.int32(-nmax)
    hi = np.int32(nmax - 1)
    for i in range(n):
        xi = x[i]
        w = qw[i]
        wx = w * xi
        for c in range(N_QX):
            l = min(hi, max(lo, _nint_small(iscales[c] * xi)))
            fl = F32(l)
            sumlx[c] += wx * fl
            suml2[c] += w * fl * fl
    scale = sumlx[0] / suml2[0] if suml2[0] != F32(0.0) else F32(0.0)
    best = scale * sumlx[0]
    winner = 0
    for c in range(1, N_QX):
        if suml2[c] > F32(0.0) and sumlx[c] * sumlx[c] > best * suml2[c]:
            scale = sumlx[c] / suml2[c]
            best = scale * sumlx[c]
            winner = c
    for i in range(n):
        L[i] = nmax + min(hi, max(lo, _nint_small(iscales[winner] * x[i])))
    return scale


@inline
def make_qkx3_quants_w(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep):
    """make_qkx3_quants with weights and use_mad=false: returns (scale, the_min) and writes L in [0, nmax]."""
    mn = x[0]
    mx = x[0]
    sum_w = weights[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < mn:
            mn = x[i]
        if x[i] > mx:
            mx = x[i]
        w = weights[i]
        sum_w += w
        sum_x += w * x[i]
    if mn > F32(0.0):
        mn = F32(0.0)
    if mx <= mn:
        for i in range(n):
            L[i] = 0
        return F32(0.0), -mn
    fnmax = F32(nmax)
    iscale = fnmax / (mx - mn)
    scale = F32(1.0) / iscale
    best_mad = F32(0.0)
    for i in range(n):
        l = nearest_int(iscale * (x[i] - mn))
        L[i] = max(0, min(nmax, l))
        diff = scale * F32(L[i]) + mn - x[i]
        best_mad += weights[i] * (diff * diff)
    for is_ in range(nstep + 1):
        iscale = (rmin + rdelta * F32(is_) + fnmax) / (mx - mn)
        sum_l = F32(0.0)
        sum_l2 = F32(0.0)
        sum_xl = F32(0.0)
        for i in range(n):
            l = nearest_int(iscale * (x[i] - mn))
            l = max(0, min(nmax, l))
            Laux[i] = l
            w = weights[i]
            fl = F32(l)
            sum_l += w * fl
            sum_l2 += w * fl * fl
            sum_xl += w * fl * x[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > F32(0.0):
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > F32(0.0):
                this_min = F32(0.0)
                this_scale = sum_xl / sum_l2
            mad = F32(0.0)
            for i in range(n):
                diff = this_scale * F32(Laux[i]) + this_min - x[i]
                mad += weights[i] * (diff * diff)
            if mad < best_mad:
                for i in range(n):
                    L[i] = Laux[i]
                best_mad = mad
                scale = this_scale
                mn = this_min
    return scale, -mn


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
    """(amax, max) over a 32-block: the value with the largest magnitude, its first occurrence deciding the sign
    (`if (amax < fabsf(v)) { amax = fabsf(v); max = v; }`; measured faster than split chains here)."""
    amax = F32(0.0)
    mx = F32(0.0)
    for j in range(QK):
        v = xr[base + j]
        if amax < abs(v):
            amax = abs(v)
            mx = v
    return amax, mx


@inline
def _minmax(xr, base):
    """(min, max) over a 32-block as `if (v < min) min = v; if (v > max) max = v;` from ±FLT_MAX scans it.

    Two chains each; the values agree with the single scan except for the sign of a zero extremum (the first zero
    wins in C), so a zero extremum is recomputed by the plain scan."""
    mn0 = xr[base]
    mx0 = mn0
    mn1 = xr[base + 1]
    mx1 = mn1
    for j in range(2, QK, 2):
        v0 = xr[base + j]
        v1 = xr[base + j + 1]
        mn0 = v0 if v0 < mn0 else mn0
        mx0 = v0 if v0 > mx0 else mx0
        mn1 = v1 if v1 < mn1 else mn1
        mx1 = v1 if v1 > mx1 else mx1
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
    return mn, mx


# ---------------------------------------------------------------------------------------------------------------------
# Q4_0: d f16, qs[16]


@jit
def quantize_q4_0(x, out):
    n, k = x.shape
    for r in range(n):
        xr = x[r]
        orow = out[r]
        for ib in range(k // QK):
            base = ib * QK
            _, mx = _signed_absmax(xr, base)
            d = mx / F32(-8.0)
            idv = F32(1.0) / d if d != F32(0.0) else F32(0.0)
            o = ib * 18
            h = fp32_to_fp16(d)
            orow[o] = h & 0xFF
            orow[o + 1] = h >> 8
            for j in range(16):  # (int8_t)(x*id + 8.5f): values in [0.5, 16.5], so truncation
                q0 = min(np.int32(15), np.int32(xr[base + j] * idv + F32(8.5)))
                q1 = min(np.int32(15), np.int32(xr[base + 16 + j] * idv + F32(8.5)))
                orow[o + 2 + j] = np.uint8(q0 | (q1 << 4))


@jit
def quantize_q4_0_imatrix(x, qw, out):
    n, k = x.shape
    weight = np.empty(QK, np.float32)
    L = np.empty(QK, np.int64)
    iscales, sumlx, suml2 = np.empty(N_QX, np.float32), np.empty(N_QX, np.float32), np.empty(N_QX, np.float32)
    for r in range(n):
        sigma2 = _row_sigma2(x, r, k)
        for ib in range(k // QK):
            base = ib * QK
            _legacy_weights(x, r, base, qw, sigma2, weight)
            d = make_qx_quants_w(QK, 8, x[r, base:base + QK], L, weight, iscales, sumlx, suml2)
            o = ib * 18
            _put_f16(out, r, o, d)
            _pack_nibbles(out, r, o + 2, L, 0)


# ---------------------------------------------------------------------------------------------------------------------
# Q4_1: d, m f16, qs[16]


@jit
def quantize_q4_1(x, out):
    n, k = x.shape
    for r in range(n):
        xr = x[r]
        orow = out[r]
        for ib in range(k // QK):
            base = ib * QK
            mn, mx = _minmax(xr, base)
            d = (mx - mn) / F32(15.0)
            idv = F32(1.0) / d if d != F32(0.0) else F32(0.0)
            o = ib * 20
            h = fp32_to_fp16(d)
            orow[o] = h & 0xFF
            orow[o + 1] = h >> 8
            h = fp32_to_fp16(mn)
            orow[o + 2] = h & 0xFF
            orow[o + 3] = h >> 8
            for j in range(16):
                q0 = min(np.int32(15), np.int32((xr[base + j] - mn) * idv + F32(0.5)))
                q1 = min(np.int32(15), np.int32((xr[base + 16 + j] - mn) * idv + F32(0.5)))
                orow[o + 4 + j] = np.uint8(q0 | (q1 << 4))


@jit
def quantize_q4_1_imatrix(x, qw, out):
    n, k = x.shape
    weight = np.empty(QK, np.float32)
    L = np.empty(QK, np.int64)
    Laux = np.empty(QK, np.int64)
    for r in range(n):
        sigma2 = _row_sigma2(x, r, k)
        for ib in range(k // QK):
            base = ib * QK
            _legacy_weights(x, r, base, qw, sigma2, weight)
            d, mn = make_qkx3_quants_w(QK, 15, x[r, base:base + QK], weight, L, Laux, F32(-0.9), F32(0.05), 36)
            o = ib * 20
            _put_f16(out, r, o, d)
            _put_f16(out, r, o + 2, -mn)
            _pack_nibbles(out, r, o + 4, L, 0)


# ---------------------------------------------------------------------------------------------------------------------
# Q5_0: d f16, qh[4], qs[16]


@jit
def quantize_q5_0(x, out):
    n, k = x.shape
    L = np.empty(QK, np.int64)
    for r in range(n):
        xr = x[r]
        for ib in range(k // QK):
            base = ib * QK
            _, mx = _signed_absmax(xr, base)
            d = mx / F32(-16.0)
            idv = F32(1.0) / d if d != F32(0.0) else F32(0.0)
            o = ib * 22
            _put_f16(out, r, o, d)
            for j in range(QK):
                L[j] = min(np.int32(31), np.int32(xr[base + j] * idv + F32(16.5)))
            _pack_q5(out, r, o + 2, L, 0)


@jit
def quantize_q5_0_imatrix(x, qw, out):
    n, k = x.shape
    weight = np.empty(QK, np.float32)
    L = np.empty(QK, np.int64)
    iscales, sumlx, suml2 = np.empty(N_QX, np.float32), np.empty(N_QX, np.float32), np.empty(N_QX, np.float32)
    for r in range(n):
        sigma2 = _row_sigma2(x, r, k)
        for ib in range(k // QK):
            base = ib * QK
            _legacy_weights(x, r, base, qw, sigma2, weight)
            d = make_qx_quants_w(QK, 16, x[r, base:base + QK], L, weight, iscales, sumlx, suml2)
            o = ib * 22
            _put_f16(out, r, o, d)
            _pack_q5(out, r, o + 2, L, 0)


# ---------------------------------------------------------------------------------------------------------------------
# Q5_1: d, m f16, qh[4], qs[16]


@jit
def quantize_q5_1(x, out):
    n, k = x.shape
    L = np.empty(QK, np.int64)
    for r in range(n):
        xr = x[r]
        for ib in range(k // QK):
            base = ib * QK
            mn, mx = _minmax(xr, base)
            d = (mx - mn) / F32(31.0)
            idv = F32(1.0) / d if d != F32(0.0) else F32(0.0)
            o = ib * 24
            _put_f16(out, r, o, d)
            _put_f16(out, r, o + 2, mn)
            for j in range(QK):
                # (uint8_t)(x + 0.5f): values are in [0, 31.5], so truncation
                L[j] = np.int32((xr[base + j] - mn) * idv + F32(0.5)) & 0xFF
            _pack_q5(out, r, o + 4, L, 0)


@jit
def quantize_q5_1_imatrix(x, qw, out):
    n, k = x.shape
    weight = np.empty(QK, np.float32)
    L = np.empty(QK, np.int64)
    Laux = np.empty(QK, np.int64)
    for r in range(n):
        sigma2 = _row_sigma2(x, r, k)
        for ib in range(k // QK):
            base = ib * QK
            _legacy_weights(x, r, base, qw, sigma2, weight)
            d, mn = make_qkx3_quants_w(QK, 31, x[r, base:base + QK], weight, L, Laux, F32(-0.9), F32(0.05), 36)
            o = ib * 24
            _put_f16(out, r, o, d)
            _put_f16(out, r, o + 2, -mn)
            _pack_q5(out, r, o + 4, L, 0)


# ---------------------------------------------------------------------------------------------------------------------
# Q8_0: d f16, qs i8[32]  (the imatrix is ignored, as in ggml)


@jit
def quantize_q8_0(x, out):
    n, k = x.shape
    for r in range(n):
        for ib in range(k // QK):
            base = ib * QK
            amax = F32(0.0)
            for j in range(QK):
                amax = max(amax, abs(x[r, base + j]))
            d = amax / F32(127.0)
            idv = F32(1.0) / d if d != F32(0.0) else F32(0.0)
            o = ib * 34
            _put_f16(out, r, o, d)
            for j in range(QK):
                out[r, o + 2 + j] = np.int64(roundf(x[r, base + j] * idv)) & 0xFF


# ---------------------------------------------------------------------------------------------------------------------
# packing of generic solutions (d per block, integer quants q in the problem's range)


@jit
def pack_symmetric(d, q, qmin, nbits, out):
    """Q4_0 / Q5_0 / Q8_0 layout from a solution: q in [qmin, qmax] stored as q - qmin (Q8_0: as int8)."""
    n, nb = d.shape
    L = np.empty(QK, np.int64)
    bsize = 2 + (QK if nbits == 8 else QK // 2) + (4 if nbits == 5 else 0)
    for r in range(n):
        for ib in range(nb):
            o = ib * bsize
            _put_f16(out, r, o, d[r, ib])
            for j in range(QK):
                L[j] = np.int64(q[r, ib, j]) - qmin
            if nbits == 4:
                _pack_nibbles(out, r, o + 2, L, 0)
            elif nbits == 5:
                _pack_q5(out, r, o + 2, L, 0)
            else:
                for j in range(QK):
                    out[r, o + 2 + j] = (L[j] + qmin) & 0xFF


@jit
def pack_asymmetric(d, m, q, nbits, out):
    """Q4_1 / Q5_1 layout from a solution x ≈ d·q + m."""
    n, nb = d.shape
    L = np.empty(QK, np.int64)
    bsize = 4 + QK // 2 + (4 if nbits == 5 else 0)
    for r in range(n):
        for ib in range(nb):
            o = ib * bsize
            _put_f16(out, r, o, d[r, ib])
            _put_f16(out, r, o + 2, m[r, ib])
            for j in range(QK):
                L[j] = np.int64(q[r, ib, j])
            if nbits == 4:
                _pack_nibbles(out, r, o + 4, L, 0)
            else:
                _pack_q5(out, r, o + 4, L, 0)


# ---------------------------------------------------------------------------------------------------------------------
# dequantization (ggml's dequantize_row_*)


@jit
def dequantize_legacy(data, k, nbits, has_min, out):
    n = data.shape[0]
    bsize = 2 + (2 if has_min else 0) + (4 if nbits == 5 else 0) + (QK if nbits == 8 else QK // 2)
    for r in range(n):
        for ib in range(k // QK):
            o = ib * bsize
            d = _get_f16(data, r, o)
            m = _get_f16(data, r, o + 2) if has_min else F32(0.0)
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
