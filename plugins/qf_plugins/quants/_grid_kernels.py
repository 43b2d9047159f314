"""numba kernels for the grid types IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS and IQ3_S.

Byte-exact with ggml's ``quantize_row_iq2_xxs_impl``, ``quantize_row_iq2_xs_impl``, ``quantize_row_iq2_s_impl``,
``quantize_row_iq3_xxs_impl`` and ``quantize_row_iq3_s_impl`` (see qf.kernels for the float32 rules).

Every 256-value super-block is split into sub-blocks (32 or 16 values).  A sub-block's values are made non-negative
(their signs are stored apart), then a scan of candidate inverse scales rounds each group of 8 (IQ2) or 4 (IQ3) values
to a digit vector; a vector that is not a grid point is replaced by the best of its precomputed neighbours
(``_grids``).  The scale with the best weighted fit wins; the sub-block scales are then stored as 4-bit multiples of
one fp16 super-block scale.

Grid arguments come from :func:`qf_plugins.quants._grids.tables`: ``kmap`` int32, ``neighbours`` uint16,
``qpoints``, ``toff64`` and ``digits`` (see GridTables and :func:`_best_neighbour`).  ``qw`` is the
imatrix (float32 ``(n_per_row,)``) or None; numba compiles one specialisation for each.
"""

from __future__ import annotations

import numpy as np

from qf.kernels import F32, c_max, get_f16, ggml_assert, inline, jit, nearest_int, opaque, put_f16
from qf_plugins.quants._search_kernels import make_qp_quants  # uint8 L as in ggml: negative roundings wrap

QK_K = 256
GROUP_MAX_EPS = F32(1e-15)
GROUP_MAX_EPS_IQ3_XXS = F32(1e-8)
GROUP_MAX_EPS_IQ2_S = F32(1e-8)
FLT_MAX = F32(3.4028234663852886e38)


# ---------------------------------------------------------------------------------------------------------------------
# byte helpers


@inline
def _put_u32(out, r, o, v):
    out[r, o] = v & 0xFF
    out[r, o + 1] = (v >> 8) & 0xFF
    out[r, o + 2] = (v >> 16) & 0xFF
    out[r, o + 3] = (v >> 24) & 0xFF


@inline
def _get_u32(data, r, o):
    return (np.int64(data[r, o]) | (np.int64(data[r, o + 1]) << 8) | (np.int64(data[r, o + 2]) << 16)
            | (np.int64(data[r, o + 3]) << 24))


# ---------------------------------------------------------------------------------------------------------------------
# shared pieces of the searches


@inline
def _weights(x, r, xo, n, qw, sigma2, sigma_scale, weight, waux):
    """weight = qw·sqrt(σ² + x²) with an imatrix; x² (or ``sigma_scale``·σ² + x² if sigma_scale > 0) without."""
    if qw is None:
        if sigma_scale > F32(0.0):
            s = sigma_scale * sigma2
            for i in range(n):
                xv = x[r, xo + i]
                weight[i] = s + xv * xv
        else:
            for i in range(n):
                xv = x[r, xo + i]
                weight[i] = xv * xv
    else:
        for i in range(n):
            xv = x[r, xo + i]
            weight[i] = qw[xo + i] * np.sqrt(sigma2 + xv * xv)
    for i in range(n):
        waux[i] = np.sqrt(weight[i])


@inline
def _signs8(x, r, xo, weight, wo, xval, even, signs, k):
    """|x| of 8 values into xval, their sign bits into signs[k]; with ``even`` the least important value (by w·x²)
    keeps a flipped sign so that the count of negative signs is even, and only 7 sign bits are stored."""
    nflip = 0
    s = 0
    for i in range(8):
        xv = x[r, xo + i]
        if xv >= F32(0.0):
            xval[wo + i] = xv
        else:
            xval[wo + i] = -xv
            nflip += 1
            s |= 1 << i
    if even:
        if nflip % 2:
            imin = 0
            xv = x[r, xo]
            mn = weight[wo] * xv * xv
            for i in range(1, 8):
                xv = x[r, xo + i]
                ax = weight[wo + i] * xv * xv
                if ax < mn:
                    mn = ax
                    imin = i
            xval[wo + imin] = -xval[wo + imin]
            s ^= 1 << imin
        s &= 127
    signs[k] = s


@inline
def _best_neighbour(neighbours, off, dim, qpoints, toff64, terms, xval, xo, waux, scale):
    """The grid index of the neighbour (list at ``off``) closest to xval/scale in waux-weighted distance.

    With ``terms`` (IQ2, long lists): a coordinate's term waux·(scale·q − x)·(scale·q − x) depends only on the
    coordinate's level q = 2l+1, so the terms of every coordinate and level are computed once into ``terms``, and a
    neighbour's distance is the sum of its coordinates' terms, found through ``toff64`` (GridTables.toff64).  With
    an empty ``terms`` (IQ3, short lists) every term is computed from ``qpoints``.  Either way the sum runs in
    coordinate order, as in ggml."""
    nn = np.int64(neighbours[off])
    best_d2 = FLT_MAX
    gi = -1
    if terms.shape[0] > 0:
        nl = terms.shape[0] // dim
        for i in range(dim):
            xv = xval[xo + i]
            w = waux[xo + i]
            for l in range(nl):
                diff = scale * F32(2 * l + 1) - xv
                terms[i * nl + l] = w * diff * diff
        for j in range(1, nn + 1):
            g = neighbours[off + j]
            packed = toff64[g]  # the point's offsets in one load
            d2 = F32(0.0)
            for i in range(dim):
                d2 += terms[np.int64((packed >> np.uint64(8 * i)) & np.uint64(0xFF))]
            if d2 < best_d2:
                best_d2 = d2
                gi = np.int64(g)
    else:
        for j in range(1, nn + 1):
            g = neighbours[off + j]
            d2 = F32(0.0)
            for i in range(dim):
                diff = scale * qpoints[g, i] - xval[xo + i]
                d2 += waux[xo + i] * diff * diff
            if d2 < best_d2:
                best_d2 = d2
                gi = np.int64(g)
    ggml_assert(gi >= 0)
    return gi


@inline
def _round_group(id_, xval, xo, dim, bits, kmax, L):
    """Digits of ``xval[xo:xo+dim]`` at inverse scale id_ (l = round((id·x − 1)/2) clamped) into L; their code."""
    u = 0
    for i in range(dim):
        l = nearest_int(F32(0.5) * (id_ * xval[xo + i] - F32(1.0)))
        l = max(0, min(kmax - 1, l))
        L[xo + i] = l
        u |= l << (bits * i)
    return u


@inline
def _fit(n, weight, xval, L):
    """(Σ w·x·q, Σ w·q²) for q = 2L+1."""
    sumqx = F32(0.0)
    sumq2 = F32(0.0)
    for i in range(n):
        w = weight[i]
        q = F32(2 * L[i] + 1)
        sumqx += w * xval[i] * q
        sumq2 += w * q * q
    return sumqx, sumq2


@inline
def _grid_index(kmap, L, lo, dim, bits):
    """The grid index of the final digits L[lo:lo+dim], as ggml computes it: each digit read as C's ``int8_t``
    (a wrapped 255 left by make_qp_quants when every candidate scale failed is −1), the code truncated to its
    ``uint16_t u``; off the grid, ggml aborts ("Oops: found point not on grid"), and so do we (raise).  Only a NaN
    scale leaves such digits, and ggml's ``GGML_ASSERT(scale >= 0)`` would abort on it next in any case."""
    u = 0
    for i in range(dim):
        u |= np.int64(np.int8(L[lo + i])) << (bits * i)
    u &= 0xFFFF
    ggml_assert(u < kmap.shape[0])  # (IQ3's map has 4096 entries: ggml reads past it, undefined behaviour)
    gi = np.int64(kmap[u])
    ggml_assert(gi >= 0)
    return gi


@inline
def _scan(n, dim, bits, kmax, denom, is_lo, is_hi, step, scale, xval, weight, waux, L, on_grid,
          ids, Lc, ogc, sqx, sq2, kmap, neighbours, qpoints, toff64, terms, digits):
    """ggml's scan of candidate inverse scales id = (2·kmax − 1 + is·step)/denom, is in [is_lo, is_hi]: at each,
    round the values to digits, snap groups that are off the grid to their best neighbour at scale 1/id, and keep
    the candidate with the best fit (Σwxq)²/Σwq², strictly better than the previous best (starting from 0).

    Returns the scale (``scale`` if no candidate is accepted); the accepted candidate's digits go to L and its
    on-grid flags to ``on_grid`` (left alone if none is).  A candidate's digits do not depend on the others, so
    all are rounded first and all fits summed together, one candidate per vector lane (``Lc`` is (n, lanes)): each
    sum still runs over i in order, as in ggml, and only the acceptance test runs one candidate at a time."""
    lanes = opaque(ids.shape[0])  # not a constant: the lane loops are to be vectorized, not unrolled
    ncand = is_hi - is_lo + 1
    ngroups = n // dim
    for c in range(lanes):
        ids[c] = (F32(2 * kmax - 1) + F32(is_lo + c) * step) / denom if c < ncand else F32(0.0)
    for i in range(n):
        xv = xval[i]
        for c in range(lanes):
            l = nearest_int(F32(0.5) * (ids[c] * xv - F32(1.0)))
            Lc[i, c] = max(0, min(kmax - 1, l))
    for c in range(ncand):
        this_scale = F32(1.0) / ids[c]
        for k in range(ngroups):
            u = 0
            for i in range(dim):
                u |= np.int64(Lc[dim * k + i, c]) << (bits * i)
            gi = np.int64(kmap[u])
            ogc[k, c] = gi >= 0
            if gi < 0:
                gi = _best_neighbour(neighbours, -gi - 1, dim, qpoints, toff64, terms, xval, dim * k, waux, this_scale)
                for i in range(dim):
                    Lc[dim * k + i, c] = digits[gi, i]
    for c in range(lanes):
        sqx[c] = F32(0.0)
        sq2[c] = F32(0.0)
    for i in range(n):
        w = weight[i]
        wx = w * xval[i]
        for c in range(lanes):
            q = F32(2 * Lc[i, c] + 1)
            sqx[c] += wx * q
            sq2[c] += w * q * q
    best = F32(0.0)
    bestc = -1
    for c in range(ncand):
        if sq2[c] > F32(0.0) and sqx[c] * sqx[c] > best * sq2[c]:
            scale = sqx[c] / sq2[c]
            best = scale * sqx[c]
            bestc = c
    if bestc >= 0:
        for i in range(n):
            L[i] = Lc[i, bestc]
        for k in range(ngroups):
            on_grid[k] = ogc[k, bestc]
    return scale


@inline
def _grid_search(n, dim, bits, kmax, mx, is_lo, is_hi, step, init_on_grid, recompute_all,
                 xval, weight, waux, L, on_grid, ids, Lc, ogc, sqx, sq2,
                 kmap, neighbours, qpoints, toff64, terms, digits):
    """The search shared by IQ2_XS, IQ2_S, IQ3_XXS and IQ3_S; returns the scale and leaves the digits in L.

    The scan (:func:`_scan`) from scale max/(2·kmax − 1); then the groups that were off the grid at the chosen
    candidate (all groups if ``recompute_all``) are rounded again at the chosen scale, and the scale refitted."""
    ngroups = n // dim
    for k in range(ngroups):
        on_grid[k] = init_on_grid
    scale = _scan(n, dim, bits, kmax, mx, is_lo, is_hi, step, mx / F32(2 * kmax - 1), xval, weight, waux, L,
                  on_grid, ids, Lc, ogc, sqx, sq2, kmap, neighbours, qpoints, toff64, terms, digits)
    n_not_on_grid = 0
    for k in range(ngroups):
        if not on_grid[k]:
            n_not_on_grid += 1
    if n_not_on_grid > 0 and scale > F32(0.0):
        id_ = F32(1.0) / scale
        for k in range(ngroups):
            if on_grid[k] and not recompute_all:
                continue
            _snap(id_, scale, xval, dim * k, dim, bits, kmax, L, waux, kmap, neighbours, qpoints, toff64, terms, digits)
        sumqx, sumq2 = _fit(n, weight, xval, L)
        if sumq2 > F32(0.0):
            scale = sumqx / sumq2
    return scale


@inline
def _snap(id_, scale, xval, xo, dim, bits, kmax, L, waux, kmap, neighbours, qpoints, toff64, terms, digits):
    """Round one group at inverse scale id_ into L; if off the grid, replace it by its best neighbour at ``scale``."""
    u = _round_group(id_, xval, xo, dim, bits, kmax, L)
    gi = np.int64(kmap[u])
    if gi < 0:
        gi = _best_neighbour(neighbours, -gi - 1, dim, qpoints, toff64, terms, xval, xo, waux, scale)
        for i in range(dim):
            L[xo + i] = digits[gi, i]


LANES = 32  # candidate scales scored together (every scan has at most 31)


@inline
def _workspace(n, ngroups, nterms):
    """Scratch for :func:`_scan` and :func:`_best_neighbour`: ids, Lc, ogc, sqx, sq2, terms."""
    return (np.zeros(LANES, np.float32), np.zeros((n, LANES), np.int32), np.zeros((ngroups, LANES), np.bool_),
            np.zeros(LANES, np.float32), np.zeros(LANES, np.float32), np.zeros(nterms, np.float32))


@inline
def _block_sigma2(x, r, base):
    s = F32(0.0)
    for i in range(QK_K):
        v = x[r, base + i]
        s += v * v
    return s


@inline
def _scale_nibble(id_, s, top):
    l = nearest_int(F32(0.5) * (id_ * s - F32(1.0)))
    return max(0, min(top, l))


# ---------------------------------------------------------------------------------------------------------------------
# IQ2_XXS: d f16; 8 × (u32 four grid indices, u32 four 7-bit signs | scale << 28)


@jit
def quantize_iq2_xxs(x, qw, kmap, neighbours, qpoints, toff64, digits, out):
    n, k = x.shape
    scales = np.empty(8, np.float32)
    weight = np.empty(32, np.float32)
    waux = np.empty(32, np.float32)
    xval = np.empty(32, np.float32)
    L = np.zeros(32, np.int64)
    on_grid = np.zeros(4, np.bool_)
    ids, Lc, ogc, sqx, sq2, terms = _workspace(32, 4, 24)
    signs = np.zeros(4, np.int64)
    q2 = np.zeros(16, np.int64)
    for r in range(n):
        for ibl in range(k // QK_K):
            base = ibl * QK_K
            o = ibl * 66
            q2[:] = 0
            max_scale = F32(0.0)
            sigma2 = _block_sigma2(x, r, base) / F32(QK_K)
            for ib in range(8):
                xo = base + 32 * ib
                _weights(x, r, xo, 32, qw, sigma2, F32(0.0), weight, waux)
                for g in range(4):
                    _signs8(x, r, xo + 8 * g, weight, 8 * g, xval, True, signs, g)
                mx = xval[0]
                for i in range(1, 32):
                    mx = c_max(mx, xval[i])
                if mx < GROUP_MAX_EPS:
                    scales[ib] = F32(0.0)
                    continue
                scale = make_qp_quants(32, 4, xval, L, weight)
                eff_max = scale * F32(3.0)
                if eff_max <= F32(0.0):
                    scales[ib] = F32(0.0)
                    continue
                scale = _scan(32, 8, 2, 3, eff_max, -6, 6, F32(0.1), scale, xval, weight, waux, L, on_grid,
                              ids, Lc, ogc, sqx, sq2, kmap, neighbours, qpoints, toff64, terms, digits)
                if scale > F32(0.0):
                    id_ = F32(1.0) / scale
                    for g in range(4):
                        _snap(id_, scale, xval, 8 * g, 8, 2, 3, L, waux,
                              kmap, neighbours, qpoints, toff64, terms, digits)
                    sumqx, sumq2 = _fit(32, weight, xval, L)
                    if sumq2 > F32(0.0):
                        scale = sumqx / sumq2
                if scale < F32(0.0):
                    scale = -scale
                    for g in range(4):
                        signs[g] = (~signs[g]) & 127
                for g in range(4):
                    gi = _grid_index(kmap, L, 8 * g, 8, 2)
                    q2[2 * ib] |= gi << (8 * g)
                    q2[2 * ib + 1] |= signs[g] << (7 * g)
                scales[ib] = scale
                ggml_assert(scale >= F32(0.0))
                max_scale = c_max(max_scale, scale)
            if max_scale == F32(0.0):
                for j in range(66):
                    out[r, o + j] = 0
                continue
            d = max_scale / F32(31.0)
            put_f16(out, r, o, d)
            id_ = F32(1.0) / d
            for ib in range(8):
                q2[2 * ib + 1] |= _scale_nibble(id_, scales[ib], 15) << 28
            for j in range(16):
                _put_u32(out, r, o + 2 + 4 * j, q2[j])


# ---------------------------------------------------------------------------------------------------------------------
# IQ2_XS: d f16; 32 × u16 (grid index | 7-bit signs << 9); scales u8[8] (two 4-bit scales per 32)


@jit
def quantize_iq2_xs(x, qw, kmap, neighbours, qpoints, toff64, digits, out):
    n, k = x.shape
    scales = np.empty(16, np.float32)
    weight = np.empty(16, np.float32)
    waux = np.empty(16, np.float32)
    xval = np.empty(16, np.float32)
    L = np.zeros(16, np.int64)
    on_grid = np.zeros(2, np.bool_)
    ids, Lc, ogc, sqx, sq2, terms = _workspace(16, 2, 24)
    signs = np.zeros(2, np.int64)
    q2 = np.zeros(32, np.int64)
    for r in range(n):
        for ibl in range(k // QK_K):
            base = ibl * QK_K
            o = ibl * 74
            q2[:] = 0
            max_scale = F32(0.0)
            sigma2 = _block_sigma2(x, r, base) / F32(QK_K)
            for ib in range(16):
                xo = base + 16 * ib
                _weights(x, r, xo, 16, qw, sigma2, F32(0.0), weight, waux)
                for g in range(2):
                    _signs8(x, r, xo + 8 * g, weight, 8 * g, xval, True, signs, g)
                mx = xval[0]
                for i in range(1, 16):
                    mx = c_max(mx, xval[i])
                L[:] = 0
                if mx < GROUP_MAX_EPS:
                    scales[ib] = F32(0.0)
                    continue
                scale = _grid_search(16, 8, 2, 3, mx, -9, 9, F32(0.1), True, False, xval, weight, waux, L,
                                     on_grid, ids, Lc, ogc, sqx, sq2, kmap, neighbours, qpoints, toff64, terms, digits)
                if scale < F32(0.0):
                    scale = -scale
                    for g in range(2):
                        signs[g] = (~signs[g]) & 127
                for g in range(2):
                    q2[2 * ib + g] = _grid_index(kmap, L, 8 * g, 8, 2) | (signs[g] << 9)
                scales[ib] = scale
                ggml_assert(scale >= F32(0.0))
                max_scale = c_max(max_scale, scale)
            if max_scale == F32(0.0):
                for j in range(74):
                    out[r, o + j] = 0
                continue
            d = max_scale / F32(31.0)
            put_f16(out, r, o, d)
            id_ = F32(1.0) / d
            for j in range(32):
                out[r, o + 2 + 2 * j] = q2[j] & 0xFF
                out[r, o + 3 + 2 * j] = q2[j] >> 8
            for ib in range(0, 16, 2):
                l0 = _scale_nibble(id_, scales[ib], 15)
                l1 = _scale_nibble(id_, scales[ib + 1], 15)
                out[r, o + 66 + ib // 2] = l0 | (l1 << 4)


# ---------------------------------------------------------------------------------------------------------------------
# IQ2_S: d f16; qs u8[32] (grid index low bits); signs u8[32]; qh u8[8] (2 high bits per index); scales u8[8]


@jit
def quantize_iq2_s(x, qw, kmap, neighbours, qpoints, toff64, digits, out):
    n, k = x.shape
    scales = np.empty(16, np.float32)
    weight = np.empty(16, np.float32)
    waux = np.empty(16, np.float32)
    xval = np.empty(16, np.float32)
    L = np.zeros(16, np.int64)
    on_grid = np.zeros(2, np.bool_)
    ids, Lc, ogc, sqx, sq2, terms = _workspace(16, 2, 24)
    signs = np.zeros(2, np.int64)
    for r in range(n):
        for ibl in range(k // QK_K):
            base = ibl * QK_K
            o = ibl * 82
            for j in range(82):
                out[r, o + j] = 0
            max_scale = F32(0.0)
            sigma2 = F32(2.0) * _block_sigma2(x, r, base) / F32(QK_K)
            for ib in range(16):
                xo = base + 16 * ib
                _weights(x, r, xo, 16, qw, sigma2, F32(0.25), weight, waux)
                for g in range(2):
                    _signs8(x, r, xo + 8 * g, weight, 8 * g, xval, False, signs, g)
                mx = xval[0]
                for i in range(1, 16):
                    mx = c_max(mx, xval[i])
                L[:] = 0
                if mx < GROUP_MAX_EPS_IQ2_S:
                    scales[ib] = F32(0.0)
                    continue
                scale = _grid_search(16, 8, 2, 3, mx, -9, 9, F32(0.1), True, False, xval, weight, waux, L,
                                     on_grid, ids, Lc, ogc, sqx, sq2, kmap, neighbours, qpoints, toff64, terms, digits)
                if scale < F32(0.0):
                    scale = -scale
                    for g in range(2):
                        signs[g] = (~signs[g]) & 0xFF
                for g in range(2):
                    gi = _grid_index(kmap, L, 8 * g, 8, 2)
                    i8 = 2 * ib + g
                    out[r, o + 2 + i8] = gi & 0xFF
                    out[r, o + 66 + i8 // 4] |= (gi >> 8) << (2 * (i8 % 4))
                    out[r, o + 34 + i8] = signs[g]
                scales[ib] = scale
                ggml_assert(scale >= F32(0.0))
                max_scale = c_max(max_scale, scale)
            if max_scale == F32(0.0):
                continue
            d = max_scale / F32(31.0)
            put_f16(out, r, o, d * F32(0.9875))
            id_ = F32(1.0) / d
            for ib in range(0, 16, 2):
                l0 = _scale_nibble(id_, scales[ib], 15)
                l1 = _scale_nibble(id_, scales[ib + 1], 15)
                out[r, o + 74 + ib // 2] = l0 | (l1 << 4)


# ---------------------------------------------------------------------------------------------------------------------
# IQ3_XXS: d f16; qs u8[64] (grid indices); 8 × u32 (four 7-bit signs | scale << 28)


@jit
def quantize_iq3_xxs(x, qw, kmap, neighbours, qpoints, toff64, digits, out):
    n, k = x.shape
    scales = np.empty(8, np.float32)
    weight = np.empty(32, np.float32)
    waux = np.empty(32, np.float32)
    xval = np.empty(32, np.float32)
    L = np.zeros(32, np.int64)
    on_grid = np.zeros(8, np.bool_)
    ids, Lc, ogc, sqx, sq2, terms = _workspace(32, 8, 0)
    signs = np.zeros(4, np.int64)
    q3 = np.zeros(64, np.int64)
    sas = np.zeros(8, np.int64)
    for r in range(n):
        for ibl in range(k // QK_K):
            base = ibl * QK_K
            o = ibl * 98
            q3[:] = 0
            sas[:] = 0
            max_scale = F32(0.0)
            sigma2 = F32(2.0) * _block_sigma2(x, r, base) / F32(QK_K)
            for ib in range(8):
                xo = base + 32 * ib
                _weights(x, r, xo, 32, qw, sigma2, F32(0.0), weight, waux)
                for g in range(4):
                    _signs8(x, r, xo + 8 * g, weight, 8 * g, xval, True, signs, g)
                mx = xval[0]
                for i in range(1, 32):
                    mx = c_max(mx, xval[i])
                L[:] = 0
                if mx < GROUP_MAX_EPS_IQ3_XXS:
                    scales[ib] = F32(0.0)
                    continue
                scale = _grid_search(32, 4, 3, 8, mx, -15, 15, F32(0.2), True, False, xval, weight, waux, L,
                                     on_grid, ids, Lc, ogc, sqx, sq2, kmap, neighbours, qpoints, toff64, terms, digits)
                if scale < F32(0.0):
                    scale = -scale
                    for g in range(4):
                        signs[g] = (~signs[g]) & 127
                for g in range(8):
                    q3[8 * ib + g] = _grid_index(kmap, L, 4 * g, 4, 3)
                sas[ib] = signs[0] | (signs[1] << 7) | (signs[2] << 14) | (signs[3] << 21)
                scales[ib] = scale
                ggml_assert(scale >= F32(0.0))
                max_scale = c_max(max_scale, scale)
            if max_scale == F32(0.0):
                for j in range(98):
                    out[r, o + j] = 0
                continue
            d = max_scale / F32(31.0)
            put_f16(out, r, o, d * F32(1.0125))
            id_ = F32(1.0) / d
            for j in range(64):
                out[r, o + 2 + j] = q3[j]
            for ib in range(8):
                _put_u32(out, r, o + 66 + 4 * ib, sas[ib] | (_scale_nibble(id_, scales[ib], 15) << 28))


# ---------------------------------------------------------------------------------------------------------------------
# IQ3_S: d f16; qs u8[64]; qh u8[8] (9th index bit); signs u8[32]; scales u8[4] (two 4-bit scales per 64)


@jit
def quantize_iq3_s(x, qw, kmap, neighbours, qpoints, toff64, digits, out):
    n, k = x.shape
    scales = np.empty(8, np.float32)
    weight = np.empty(32, np.float32)
    waux = np.empty(32, np.float32)
    xval = np.empty(32, np.float32)
    L = np.zeros(32, np.int64)
    on_grid = np.zeros(8, np.bool_)
    ids, Lc, ogc, sqx, sq2, terms = _workspace(32, 8, 0)
    signs = np.zeros(4, np.int64)
    for r in range(n):
        for ibl in range(k // QK_K):
            base = ibl * QK_K
            o = ibl * 110
            for j in range(110):
                out[r, o + j] = 0
            # ggml advances its qs/signs cursors only past sub-blocks it encodes (an all-zero sub-block is skipped,
            # and the next one lands in its place)
            qs_at = o + 2
            signs_at = o + 74
            max_scale = F32(0.0)
            sigma2 = F32(2.0) * _block_sigma2(x, r, base) / F32(QK_K)
            for ib in range(8):
                xo = base + 32 * ib
                _weights(x, r, xo, 32, qw, sigma2, F32(0.0), weight, waux)
                for g in range(4):
                    _signs8(x, r, xo + 8 * g, weight, 8 * g, xval, False, signs, g)
                mx = xval[0]
                for i in range(1, 32):
                    mx = c_max(mx, xval[i])
                L[:] = 0
                if mx == F32(0.0):
                    scales[ib] = F32(0.0)
                    continue
                scale = _grid_search(32, 4, 3, 8, mx, -9, 9, F32(0.2), False, True, xval, weight, waux, L,
                                     on_grid, ids, Lc, ogc, sqx, sq2, kmap, neighbours, qpoints, toff64, terms, digits)
                if scale < F32(0.0):
                    scale = -scale
                    for g in range(4):
                        signs[g] = (~signs[g]) & 0xFF
                for g in range(8):
                    gi = _grid_index(kmap, L, 4 * g, 4, 3)
                    out[r, qs_at + g] = gi & 0xFF
                    out[r, o + 66 + ib] |= (gi >> 8) << g
                qs_at += 8
                for g in range(4):
                    out[r, signs_at + g] = signs[g]
                signs_at += 4
                scales[ib] = scale
                ggml_assert(scale >= F32(0.0))
                max_scale = c_max(max_scale, scale)
            if max_scale == F32(0.0):
                continue
            d = max_scale / F32(31.0)
            put_f16(out, r, o, d * F32(1.033))
            id_ = F32(1.0) / d
            for ib in range(0, 8, 2):
                l1 = _scale_nibble(id_, scales[ib], 15)
                l2 = _scale_nibble(id_, scales[ib + 1], 15)
                out[r, o + 106 + ib // 2] = l1 | (l2 << 4)


# ---------------------------------------------------------------------------------------------------------------------
# dequantization (ggml's dequantize_row_*; ``values`` maps a digit to the grid's stored magnitude)


@inline
def _ksign(s7):
    """ksigns_iq2xs: 7 stored sign bits plus an 8th that makes the count of negative signs even."""
    s = np.int64(s7)
    p = s ^ (s >> 4)
    p ^= p >> 2
    p ^= p >> 1
    return s | ((p & 1) << 7)


@inline
def _signed(v, sbits, j):
    return -v if (sbits >> j) & 1 else v


@jit
def dequantize_iq2_xxs(data, digits, values, out):
    n = data.shape[0]
    for r in range(n):
        for ibl in range(out.shape[1] // QK_K):
            o = ibl * 66
            d = get_f16(data, r, o)
            for ib in range(8):
                a0 = _get_u32(data, r, o + 2 + 8 * ib)
                a1 = _get_u32(data, r, o + 6 + 8 * ib)
                db = d * (F32(0.5) + F32(a1 >> 28)) * F32(0.25)
                for g in range(4):
                    gi = (a0 >> (8 * g)) & 0xFF
                    s = _ksign((a1 >> (7 * g)) & 127)
                    y = ibl * QK_K + 32 * ib + 8 * g
                    for j in range(8):
                        out[r, y + j] = _signed(db * values[digits[gi, j]], s, j)


@jit
def dequantize_iq2_xs(data, digits, values, out):
    n = data.shape[0]
    for r in range(n):
        for ibl in range(out.shape[1] // QK_K):
            o = ibl * 74
            d = get_f16(data, r, o)
            for ib in range(8):
                sc = np.int64(data[r, o + 66 + ib])
                db0 = d * (F32(0.5) + F32(sc & 0xF)) * F32(0.25)
                db1 = d * (F32(0.5) + F32(sc >> 4)) * F32(0.25)
                for g in range(4):
                    q = np.int64(data[r, o + 2 + 8 * ib + 2 * g]) | (np.int64(data[r, o + 3 + 8 * ib + 2 * g]) << 8)
                    gi = q & 511
                    s = _ksign(q >> 9)
                    db = db0 if g < 2 else db1
                    y = ibl * QK_K + 32 * ib + 8 * g
                    for j in range(8):
                        out[r, y + j] = _signed(db * values[digits[gi, j]], s, j)


@jit
def dequantize_iq2_s(data, digits, values, out):
    n = data.shape[0]
    for r in range(n):
        for ibl in range(out.shape[1] // QK_K):
            o = ibl * 82
            d = get_f16(data, r, o)
            for ib in range(8):
                sc = np.int64(data[r, o + 74 + ib])
                db0 = d * (F32(0.5) + F32(sc & 0xF)) * F32(0.25)
                db1 = d * (F32(0.5) + F32(sc >> 4)) * F32(0.25)
                qh = np.int64(data[r, o + 66 + ib])
                for g in range(4):
                    gi = np.int64(data[r, o + 2 + 4 * ib + g]) | ((qh << (8 - 2 * g)) & 0x300)
                    s = np.int64(data[r, o + 34 + 4 * ib + g])
                    db = db0 if g < 2 else db1
                    y = ibl * QK_K + 32 * ib + 8 * g
                    for j in range(8):
                        out[r, y + j] = _signed(db * values[digits[gi, j]], s, j)


@jit
def dequantize_iq3_xxs(data, digits, values, out):
    n = data.shape[0]
    for r in range(n):
        for ibl in range(out.shape[1] // QK_K):
            o = ibl * 98
            d = get_f16(data, r, o)
            for ib in range(8):
                a = _get_u32(data, r, o + 66 + 4 * ib)
                db = d * (F32(0.5) + F32(a >> 28)) * F32(0.5)
                for g in range(4):
                    s = _ksign((a >> (7 * g)) & 127)
                    g1 = np.int64(data[r, o + 2 + 8 * ib + 2 * g])
                    g2 = np.int64(data[r, o + 3 + 8 * ib + 2 * g])
                    y = ibl * QK_K + 32 * ib + 8 * g
                    for j in range(4):
                        out[r, y + j] = _signed(db * values[digits[g1, j]], s, j)
                        out[r, y + j + 4] = _signed(db * values[digits[g2, j]], s, j + 4)


@jit
def dequantize_iq3_s(data, digits, values, out):
    n = data.shape[0]
    for r in range(n):
        for ibl in range(out.shape[1] // QK_K):
            o = ibl * 110
            d = get_f16(data, r, o)
            for ib in range(8):
                sc = np.int64(data[r, o + 106 + ib // 2])
                db = d * F32(1 + 2 * ((sc >> (4 * (ib % 2))) & 0xF))
                qh = np.int64(data[r, o + 66 + ib])
                for g in range(4):
                    g1 = np.int64(data[r, o + 2 + 8 * ib + 2 * g]) | ((qh << (8 - 2 * g)) & 256)
                    g2 = np.int64(data[r, o + 3 + 8 * ib + 2 * g]) | ((qh << (7 - 2 * g)) & 256)
                    s = np.int64(data[r, o + 74 + 4 * ib + g])
                    y = ibl * QK_K + 32 * ib + 8 * g
                    for j in range(4):
                        out[r, y + j] = _signed(db * values[digits[g1, j]], s, j)
                        out[r, y + j + 4] = _signed(db * values[digits[g2, j]], s, j + 4)
