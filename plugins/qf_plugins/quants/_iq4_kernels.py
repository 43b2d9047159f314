"""numba kernels for the non-linear 4-bit types IQ4_NL (blocks of 32) and IQ4_XS (super-blocks of 256).

Byte-exact with ggml's ``quantize_iq4_nl`` / ``quantize_iq4_xs`` (both go through ``quantize_row_iq4_nl_impl``
with ntry = 7, with or without an imatrix) — see qf.kernels for the float32 rules.  ``x`` is float32
``(rows, n_per_row)``, ``out`` uint8 ``(rows, row_bytes)``; the imatrix is float32 ``(n_per_row,)``.

Nearest table entry.  ggml's ``best_index_int8`` bisects the table and then compares ``x - lo < hi - x``.  Near a
midpoint both differences are exact in float32 (|x| >= 4.5 there, the half gaps are <= 12), so the result is simply
"how many midpoints (lo + hi) / 2 are <= x" — ties go up, NaN and values >= 113 give 15, values <= -127 give 0.  The
midpoints are multiples of 1/2, so that count depends only on floor(2x): one table lookup (``_NEAREST``, checked
against the bisection for every float32 in the tests).
"""

from __future__ import annotations

import numpy as np

from qf.kernels import F32, bits_f32, get_f16, inline, jit, nearest_int, put_f16
from qf_plugins.quants._refine_kernels import group_error, refine_block_scale, refine_superblock, scratch

QK = 32  # elements per scale (IQ4_NL block, IQ4_XS sub-block)
QK_K = 256  # IQ4_XS super-block
NL_BYTES = 18
XS_BYTES = 136
NTRY = 7
GROUP_MAX_EPS = F32(1e-15)

KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.int8)
VALUES = KVALUES.astype(np.float32)
_LO = -127
_HI = 113


def _nearest_table() -> np.ndarray:
    """_NEAREST[floor(2x) - 2*_LO] = index of the entry nearest x (ties up), for _LO < x < _HI."""
    doubled_mids = KVALUES[:-1].astype(np.int64) + KVALUES[1:]
    floors = np.arange(2 * _LO, 2 * _HI, dtype=np.int64)
    return (doubled_mids[None, :] <= floors[:, None]).sum(axis=1).astype(np.uint8)


_NEAREST = _nearest_table()


@inline
def best_index(v):
    """ggml's best_index_int8(16, kvalues_iq4nl, v)."""
    if v > F32(_LO) and v < F32(_HI):
        return np.int64(_NEAREST[np.int64(np.floor(v * F32(2.0))) - 2 * _LO])
    if v <= F32(_LO):
        return 0
    return 15


@jit
def best_index_bisect(v):
    """ggml's best_index_int8 written as in C (only for checking :func:`best_index`)."""
    if v <= VALUES[0]:
        return 0
    if v >= VALUES[15]:
        return 15
    ml = 0
    mu = 15
    while mu - ml > 1:
        mav = (ml + mu) // 2
        if v < VALUES[mav]:
            mu = mav
        else:
            ml = mav
    return mu - 1 if v - VALUES[mu - 1] < VALUES[mu] - v else mu


@jit
def check_best_index(lo_bits, hi_bits):
    """Compare :func:`best_index` with the bisection for the float32 bit patterns [lo_bits, hi_bits) (positive
    patterns count up, negative ones down); returns the first mismatching pattern or -1."""
    for u in range(lo_bits, hi_bits):
        v = bits_f32(u)
        if best_index(v) != best_index_bisect(v):
            return u
    return -1


@inline
def _sum_squares(x, r, base, n):
    s = F32(0.0)
    for j in range(n):
        s += x[r, base + j] * x[r, base + j]
    return s


@inline
def _weights_plain(x, r, base, w):
    for j in range(QK):
        w[j] = x[r, base + j] * x[r, base + j]


@inline
def _weights_imatrix(x, r, base, qw, sigma2, w):
    for j in range(QK):
        v = x[r, base + j]
        w[j] = qw[base + j] * np.sqrt(sigma2 + v * v)


@inline
def _fit(x, r, base, w, inv):
    """Σ w·q·x and Σ w·q² with q the table value nearest inv·x (C's order of operations)."""
    sumqx = F32(0.0)
    sumq2 = F32(0.0)
    for j in range(QK):
        xv = x[r, base + j]
        q = VALUES[best_index(inv * xv)]
        wq = w[j] * q
        sumqx += wq * xv
        sumq2 += wq * q
    return sumqx, sumq2


@inline
def block_scale(x, r, base, w):
    """The scale quantize_row_iq4_nl_impl picks for one block of 32 (ntry = 7): 0 for an all-tiny block."""
    amax = F32(0.0)
    mx = F32(0.0)
    for j in range(QK):
        ax = abs(x[r, base + j])
        if ax > amax:
            amax = ax
            mx = x[r, base + j]
    if amax < GROUP_MAX_EPS:
        return F32(0.0)
    d = -mx / VALUES[0]
    sumqx, sumq2 = _fit(x, r, base, w, F32(1.0) / d)
    d = sumqx / sumq2 if sumq2 > F32(0.0) else F32(0.0)
    best = d * sumqx
    for itry in range(-NTRY, NTRY + 1):
        sumqx, sumq2 = _fit(x, r, base, w, F32(itry + _LO) / mx)
        if sumq2 > F32(0.0) and sumqx * sumqx > best * sumq2:
            d = sumqx / sumq2
            best = d * sumqx
    return d


@inline
def _pack_nibbles(x, r, base, inv, out, o):
    for j in range(16):
        lo = best_index(inv * x[r, base + j])
        hi = best_index(inv * x[r, base + 16 + j])
        out[r, o + j] = lo | (hi << 4)


@inline
def _write_nl(x, r, ib, d, out):
    """IQ4_NL block: fp16 d, then the nibbles re-derived with the float (not fp16) scale, as ggml does."""
    o = ib * NL_BYTES
    put_f16(out, r, o, d)
    inv = F32(1.0) / d if d != F32(0.0) else F32(0.0)
    _pack_nibbles(x, r, ib * QK, inv, out, o + 2)


@inline
def write_xs(x, r, ibl, scales, out):
    """IQ4_XS super-block from its 8 block scales: super scale -max/32 (max = first largest |scale|), 6-bit block
    scales l in [-32, 31] stored as l + 32 (low nibbles in scales_l, high 2 bits in scales_h), nibbles re-derived
    with the float scale d·l."""
    max_scale = F32(0.0)
    amax_scale = F32(0.0)
    for ib in range(QK_K // QK):
        a = abs(scales[ib])
        if a > amax_scale:
            amax_scale = a
            max_scale = scales[ib]
    o = ibl * XS_BYTES
    d = -max_scale / F32(32.0)
    put_f16(out, r, o, d)
    inv = F32(1.0) / d if d != F32(0.0) else F32(0.0)
    scales_h = 0
    for ib in range(QK_K // QK):
        l = nearest_int(inv * scales[ib])
        l = max(-32, min(31, l))
        dl = d * F32(l)
        idl = F32(1.0) / dl if dl != F32(0.0) else F32(0.0)
        _pack_nibbles(x, r, ibl * QK_K + ib * QK, idl, out, o + 8 + 16 * ib)
        l += 32
        if ib % 2 == 0:
            out[r, o + 4 + ib // 2] = l & 0xF
        else:
            out[r, o + 4 + ib // 2] |= (l & 0xF) << 4
        scales_h |= (l >> 4) << (2 * ib)
    out[r, o + 2] = scales_h & 0xFF
    out[r, o + 3] = scales_h >> 8


# ---------------------------------------------------------------------------------------------------------------------
# native (ggml) quantization


@jit
def quantize_iq4_nl(x, out):
    n, k = x.shape
    w = np.empty(QK, np.float32)
    for r in range(n):
        for ib in range(k // QK):
            base = ib * QK
            _weights_plain(x, r, base, w)
            _write_nl(x, r, ib, block_scale(x, r, base, w), out)


@jit
def quantize_iq4_nl_imatrix(x, qw, out):
    n, k = x.shape
    w = np.empty(QK, np.float32)
    for r in range(n):
        for ib in range(k // QK):
            base = ib * QK
            sigma2 = _sum_squares(x, r, base, QK) * F32(2.0 / QK)
            _weights_imatrix(x, r, base, qw, sigma2, w)
            _write_nl(x, r, ib, block_scale(x, r, base, w), out)


@jit
def quantize_iq4_xs(x, out):
    n, k = x.shape
    w = np.empty(QK, np.float32)
    scales = np.empty(QK_K // QK, np.float32)
    for r in range(n):
        for ibl in range(k // QK_K):
            for ib in range(QK_K // QK):
                base = ibl * QK_K + ib * QK
                _weights_plain(x, r, base, w)
                scales[ib] = block_scale(x, r, base, w)
            write_xs(x, r, ibl, scales, out)


@jit
def quantize_iq4_xs_imatrix(x, qw, out):
    n, k = x.shape
    w = np.empty(QK, np.float32)
    scales = np.empty(QK_K // QK, np.float32)
    for r in range(n):
        for ibl in range(k // QK_K):
            sigma2 = _sum_squares(x, r, ibl * QK_K, QK_K) * F32(2.0 / QK_K)
            for ib in range(QK_K // QK):
                base = ibl * QK_K + ib * QK
                _weights_imatrix(x, r, base, qw, sigma2, w)
                scales[ib] = block_scale(x, r, base, w)
            write_xs(x, r, ibl, scales, out)


# ---------------------------------------------------------------------------------------------------------------------
# packing of generic solutions (d per block of 32, q indexing the ascending table VALUES)


@jit
def pack_nl(x, w, d, out):
    """Each block's fp16 scale: the solution's, rounded, or an fp16 neighbour, whichever fits best with the
    nibbles re-derived for it (qf_plugins.quants._refine_kernels.refine_block_scale)."""
    n, nb = d.shape
    table = VALUES.astype(np.float64)
    q = np.empty(QK, np.int64)
    tmp = scratch(QK)
    for r in range(n):
        for ib in range(nb):
            o = ib * NL_BYTES
            dd, _ = refine_block_scale(x[r, ib * QK:(ib + 1) * QK], w[r, ib * QK:(ib + 1) * QK], d[r, ib], 0.0,
                                       False, 0, 0, table, q, tmp)
            put_f16(out, r, o, F32(dd))
            for j in range(16):
                out[r, o + 2 + j] = (q[j] & 0xF) | ((q[16 + j] & 0xF) << 4)


@jit
def pack_xs(x, w, d, out):
    """Block scales against an fp16 super-block scale chosen and improved against the weighted error
    (refine_superblock), then nibbles re-derived from the stored scales."""
    n, nb = d.shape
    table = VALUES.astype(np.float64)
    nsub = QK_K // QK
    sc = np.empty(nsub, np.int64)
    mn = np.zeros(nsub, np.int64)
    q = np.empty(QK_K, np.int64)
    ds = np.empty(nsub)
    ms = np.zeros(nsub)
    for r in range(n):
        for ibl in range(nb // nsub):
            for ib in range(nsub):
                ds[ib] = d[r, ibl * nsub + ib]
            xs = x[r, ibl * QK_K:(ibl + 1) * QK_K]
            ws = w[r, ibl * QK_K:(ibl + 1) * QK_K]
            D2, _ = refine_superblock(xs, ws, QK, ds, ms, sc, -32, 31, mn, 0, 0, False, 0, 0, table, q, 3)
            o = ibl * XS_BYTES
            put_f16(out, r, o, F32(D2))
            scales_h = 0
            for ib in range(nsub):
                l = sc[ib] + 32
                if ib % 2 == 0:
                    out[r, o + 4 + ib // 2] = l & 0xF
                else:
                    out[r, o + 4 + ib // 2] |= (l & 0xF) << 4
                scales_h |= (l >> 4) << (2 * ib)
                group_error(xs, ws, ib * QK, QK, D2 * sc[ib], 0.0, 0, 0, table, q)  # the block's nibbles
                for j in range(16):
                    out[r, o + 8 + 16 * ib + j] = (q[ib * QK + j] & 0xF) | ((q[ib * QK + 16 + j] & 0xF) << 4)
            out[r, o + 2] = scales_h & 0xFF
            out[r, o + 3] = scales_h >> 8


# ---------------------------------------------------------------------------------------------------------------------
# dequantization (ggml's dequantize_row_iq4_nl / _xs)


@jit
def dequantize_iq4_nl(data, k, out):
    n = data.shape[0]
    for r in range(n):
        for ib in range(k // QK):
            o = ib * NL_BYTES
            d = get_f16(data, r, o)
            for j in range(16):
                b = data[r, o + 2 + j]
                out[r, ib * QK + j] = d * VALUES[b & 0xF]
                out[r, ib * QK + 16 + j] = d * VALUES[b >> 4]


@jit
def dequantize_iq4_xs(data, k, out):
    n = data.shape[0]
    for r in range(n):
        for ibl in range(k // QK_K):
            o = ibl * XS_BYTES
            d = get_f16(data, r, o)
            scales_h = np.int64(data[r, o + 2]) | (np.int64(data[r, o + 3]) << 8)
            for ib in range(QK_K // QK):
                lo = (np.int64(data[r, o + 4 + ib // 2]) >> (4 * (ib % 2))) & 0xF
                ls = lo | (((scales_h >> (2 * ib)) & 3) << 4)
                dl = d * F32(ls - 32)
                base = ibl * QK_K + ib * QK
                for j in range(16):
                    b = data[r, o + 8 + 16 * ib + j]
                    out[r, base + j] = dl * VALUES[b & 0xF]
                    out[r, base + 16 + j] = dl * VALUES[b >> 4]
