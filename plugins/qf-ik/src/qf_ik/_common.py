"""numba helpers shared by qf_ik's kernels (C idioms of ik_llama.cpp's quantizers, float32 in C's order).

ik's ``make_qx_quants`` (ggml-quants.c), ``c_int`` and the index-table lookup ``best_index_sub_after`` are shared
with qf_plugins (which keeps ik's searches for mainline types as alternatives for generic strategies): they live in
qf's public kernel library, qf.kernels, and are re-exported here.
"""

from __future__ import annotations

import numpy as np
from qf.kernels import (  # noqa: F401  (re-exported for qf_ik's kernel modules)
    F32,
    INT_MIN,
    best_index_sub_after,
    bits_f32,
    c_int,
    f32_bits,
    inline,
    jit,
    make_qx_quants_ik,
    nearest_int,
)

QK_K = 256
K_EPS = F32(1e-9)
K_EPS2 = K_EPS * K_EPS  # constexpr float kEps2 = kEps*kEps (float32 product)


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
