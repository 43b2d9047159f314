"""numba helpers shared by qf_ik's kernels (C idioms of ik_llama.cpp's quantizers, float32 in C's order).

Some of these duplicate private helpers of qf_plugins (``make_qx_quants`` ...): ik's versions differ from mainline's
(ik's ``make_qx_quants`` in ggml-quants.c tries a second family of scales and refines the quants one step at a time),
and qf_ik uses only qf's public API.
"""

from __future__ import annotations

import numpy as np
from qf.kernels import F32, bits_f32, f32_bits, inline, jit, nearest_int

QK_K = 256
K_EPS = F32(1e-9)
K_EPS2 = K_EPS * K_EPS  # constexpr float kEps2 = kEps*kEps (float32 product)
INT_MIN = -2147483648


@inline
def c_max(a, b):
    """C's ``MAX(a, b)`` macro, ``a > b ? a : b`` (a NaN b wins)."""
    return a if a > b else b


@inline
def std_max(a, b):
    """``std::max(a, b)``, ``a < b ? b : a`` (a NaN b loses)."""
    return b if a < b else a


@inline
def put_f32(out, r, o, value):
    """Store float32 ``value`` little-endian at ``out[r, o:o+4]`` (the per-row scale of the KS/KT types)."""
    u = np.int64(f32_bits(F32(value)))
    out[r, o] = u & 0xFF
    out[r, o + 1] = (u >> 8) & 0xFF
    out[r, o + 2] = (u >> 16) & 0xFF
    out[r, o + 3] = (u >> 24) & 0xFF


@inline
def get_f32(data, r, o):
    u = (np.int64(data[r, o]) | (np.int64(data[r, o + 1]) << 8) | (np.int64(data[r, o + 2]) << 16)
         | (np.int64(data[r, o + 3]) << 24))
    return bits_f32(u)


@inline
def c_int(v):
    """C's ``(int)v`` for a float32 as x86-64 computes it (cvttss2si): truncation toward zero; NaN and values out of
    the int range give INT_MIN."""
    if not (v > F32(-2147483904.0) and v < F32(2147483648.0)):
        return INT_MIN
    return np.int64(v)


@inline
def best_index_sub_after(values, off, index, nidx, n, x):
    """ik's ``best_index_iq3nl/iq4nl/iq5nl(values + off, x)``: ``ix = (int)x - values[0]``, then the index table
    (an entry >= n means "between ix-n and ix-n+1, compare")."""
    ix = c_int(x) - np.int64(values[off])
    if ix < 0 or ix >= nidx:
        return 0 if ix < 0 else n - 1
    ix = np.int64(index[ix])
    if ix < n:
        return ix
    lo = values[off + ix - n]
    hi = values[off + ix - n + 1]
    return ix - n if x - F32(lo) < F32(hi) - x else ix - n + 1


@inline
def best_index_sub_before(values, off, index, nidx, n, x):
    """ik's ``best_index_iq6nl(values + off, x)`` (float values): ``ix = (int)(x - values[0])``."""
    ix = c_int(x - values[off])
    if ix < 0 or ix >= nidx:
        return 0 if ix < 0 else n - 1
    ix = np.int64(index[ix])
    if ix < n:
        return ix
    return ix - n if x - values[off + ix - n] < values[off + ix - n + 1] - x else ix - n + 1


@jit
def row_weights(x, r, imatrix, block_size, weight):
    """ik's ``QHelper::row_weights``: the imatrix, except that a block where Σw², Σx² or Σw|x| is tiny gets 1e-9
    everywhere.  Writes ``weight`` (n_per_row,)."""
    n = x.shape[1]
    thr = F32(block_size) * K_EPS2
    for ib in range(n // block_size):
        base = ib * block_size
        sumw2 = F32(0.0)
        sumx2 = F32(0.0)
        sumwx = F32(0.0)
        for j in range(block_size):
            wv = imatrix[base + j]
            xv = x[r, base + j]
            weight[base + j] = wv
            sumw2 += wv * wv
            sumx2 += xv * xv
            sumwx += wv * np.abs(xv)
        if sumw2 > thr and sumx2 > thr and sumwx > thr:
            continue
        for j in range(block_size):
            weight[base + j] = K_EPS


@inline
def _qx_sums(n, nmax, x, xo, qw, iscale):
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        lv = nearest_int(iscale * x[xo + i])
        lv = max(-nmax, min(nmax - 1, lv))
        w = qw[i]
        sumlx += w * x[xo + i] * F32(lv)
        suml2 += w * F32(lv) * F32(lv)
    return sumlx, suml2


@inline
def _qx_fill(n, nmax, x, xo, L, iscale):
    for i in range(n):
        lv = nearest_int(iscale * x[xo + i])
        L[i] = nmax + max(-nmax, min(nmax - 1, lv))


@jit
def make_qx_quants_ik(n, nmax, x, xo, L, qw):
    """ik's ggml-quants.c ``make_qx_quants(n, nmax, x, L, rmse_type=1, qw)`` with qw given: the 19 scales
    −(nmax + 0.1·is)/max, the 19 scales (nmax − 1 + 0.1·is)/max, then single-step refinement of the quants.
    ``x`` is read from ``x[xo:xo+n]``; L gets the quants + nmax."""
    mx = F32(0.0)
    amax = F32(0.0)
    for i in range(n):
        ax = np.abs(x[xo + i])
        if ax > amax:
            amax = ax
            mx = x[xo + i]
    if amax < F32(1e-15):
        for i in range(n):
            L[i] = 0
        return F32(0.0)
    iscale = F32(-nmax) / mx
    sumlx, suml2 = _qx_sums(n, nmax, x, xo, qw, iscale)
    _qx_fill(n, nmax, x, xo, L, iscale)
    scale = sumlx / suml2 if suml2 != F32(0.0) else F32(0.0)
    best = scale * sumlx
    best_sumlx = sumlx
    best_suml2 = suml2
    for is_ in range(-9, 10):
        iscale = -(F32(nmax) + F32(0.1) * F32(is_)) / mx
        sumlx, suml2 = _qx_sums(n, nmax, x, xo, qw, iscale)
        if suml2 > F32(0.0) and sumlx * sumlx > best * suml2:
            _qx_fill(n, nmax, x, xo, L, iscale)
            scale = sumlx / suml2
            best = scale * sumlx
            best_sumlx = sumlx
            best_suml2 = suml2
        iscale = (F32(nmax - 1) + F32(0.1) * F32(is_)) / mx
        sumlx, suml2 = _qx_sums(n, nmax, x, xo, qw, iscale)
        if suml2 > F32(0.0) and sumlx * sumlx > best * suml2:
            _qx_fill(n, nmax, x, xo, L, iscale)
            scale = sumlx / suml2
            best = scale * sumlx
            best_sumlx = sumlx
            best_suml2 = suml2
    sumlx = best_sumlx
    suml2 = best_suml2
    for _ in range(n * (2 * nmax - 1)):
        abs_gmax = F32(0.0)
        gmax = F32(0.0)
        best_j = -1
        for j in range(n):
            w = qw[j]
            lv = np.int64(L[j]) - nmax
            g = scale * w * (x[xo + j] - scale * F32(lv))
            if (g > F32(0.0) and lv < nmax - 1) or (g < F32(0.0) and lv > -nmax):
                ag = np.abs(g)
                if ag > abs_gmax:
                    abs_gmax = ag
                    gmax = g
                    best_j = j
        if best_j < 0:
            break
        new_sumlx = sumlx
        new_suml2 = suml2
        w = qw[best_j]
        lv = np.int64(L[best_j]) - nmax
        if gmax > F32(0.0):
            new_sumlx += w * x[xo + best_j]
            new_suml2 += w * F32(2 * lv + 1)
            lv += 1
        else:
            new_sumlx -= w * x[xo + best_j]
            new_suml2 -= w * F32(2 * lv - 1)
            lv -= 1
        if new_suml2 > F32(0.0) and new_sumlx * new_sumlx > best * new_suml2:
            sumlx = new_sumlx
            suml2 = new_suml2
            scale = sumlx / suml2
            best = scale * sumlx
            L[best_j] = lv + nmax
        else:
            break
    return scale


@jit
def make_qx_quants_iqk(n, nmax, x, L, qw):
    """iqk_quantize.cpp's own (anonymous-namespace) ``make_qx_quants``: RTN at −nmax/max, then the 18 scales
    −(nmax + 0.1·is)/max, is ≠ 0 (used for the IQ2_K super-block scales)."""
    mx = F32(0.0)
    amax = F32(0.0)
    for i in range(n):
        ax = np.abs(x[i])
        if ax > amax:
            amax = ax
            mx = x[i]
    if amax == F32(0.0):
        for i in range(n):
            L[i] = 0
        return F32(0.0)
    iscale = F32(-nmax) / mx
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        lv = nearest_int(iscale * x[i])
        lv = max(-nmax, min(nmax - 1, lv))
        L[i] = lv + nmax
        sumlx += qw[i] * x[i] * F32(lv)
        suml2 += qw[i] * F32(lv) * F32(lv)
    scale = sumlx / suml2 if suml2 != F32(0.0) else F32(0.0)
    best = scale * sumlx
    for is_ in range(-9, 10):
        if is_ == 0:
            continue
        iscale = -(F32(nmax) + F32(0.1) * F32(is_)) / mx
        sumlx = F32(0.0)
        suml2 = F32(0.0)
        for i in range(n):
            lv = nearest_int(iscale * x[i])
            lv = max(-nmax, min(nmax - 1, lv))
            sumlx += qw[i] * x[i] * F32(lv)
            suml2 += qw[i] * F32(lv) * F32(lv)
        if suml2 > F32(0.0) and sumlx * sumlx > best * suml2:
            for i in range(n):
                lv = nearest_int(iscale * x[i])
                L[i] = nmax + max(-nmax, min(nmax - 1, lv))
            scale = sumlx / suml2
            best = scale * sumlx
    return scale
