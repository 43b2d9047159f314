"""numba kernels for the 1-bit grid types IQ1_S and IQ1_M.

Byte-exact with ggml's ``quantize_row_iq1_s_impl`` / ``quantize_row_iq1_m_impl`` (see qf.kernels for the float32
rules).  Each value becomes one of three levels ``v ± δ`` for v in {-1, 0, 1} (δ = 1/8, the sign of δ chosen per
group).  Within a sub-block the values are sorted, and every split of the sorted order into three runs is scored
exactly from prefix sums; groups of 8 levels that are not on the 2048-point grid are snapped to their best neighbour.

ggml sorts with ``qsort``; glibc's qsort is a merge sort for arrays this small, so values that compare equal (ties,
and -0 against +0) keep their original order: :func:`stable_argsort` does the same.

Grid arguments come from :func:`qf_plugins.quants._grids.tables` ("iq1s"): ``kmap`` int32, ``neighbours`` uint16,
``toff64`` uint64 and ``digits`` int8 ``(2048, 8)``.  ``qw`` is the imatrix or None.
"""

from __future__ import annotations

import numpy as np

from qf.kernels import (
    F32,
    c_max,
    fp16_to_fp32,
    fp32_to_fp16,
    get_f16,
    ggml_assert,
    inline,
    jit,
    nearest_int,
    opaque,
    put_f16,
)

QK_K = 256
GROUP_MAX_EPS_IQ1_S = F32(1e-12)
GROUP_MAX_EPS_IQ1_M = F32(1e-7)
FLT_MAX = F32(3.4028234663852886e38)
#: raised (as ValueError) where ggml aborts; the codecs turn it into qf's InvalidWeightsError
DELTA = F32(0.125)
NEG_INF = F32(-np.inf)


@inline
def stable_argsort(x, r, xo, n, idx, keys):
    """Indices 0..n-1 of ``x[r, xo:xo+n]`` in ascending order, equal values in their original order.

    By rank: value i goes to the place given by the number of values below it plus the number of equal values
    before it (no branches, so the count vectorizes)."""
    m = opaque(n)  # a constant bound would be unrolled, not vectorized
    for j in range(n):
        keys[j] = x[r, xo + j]
    for i in range(n):
        v = keys[i]
        rank = 0
        for j in range(m):
            rank += np.int64((keys[j] < v) | ((keys[j] == v) & (j < i)))
        idx[rank] = i


@jit
def argsort_rows(x, block, out):
    """The kernels' sort, exposed for tests: ``out[r, b*block:(b+1)*block]`` = stable argsort of each block."""
    idx = np.empty(block, np.int64)
    keys = np.empty(block, np.float32)
    for r in range(x.shape[0]):
        for b in range(x.shape[1] // block):
            stable_argsort(x, r, b * block, block, idx, keys)
            for j in range(block):
                out[r, b * block + j] = idx[j]


@inline
def _weights(x, r, xo, n, qw, sigma2, weight):
    if qw is None:
        for i in range(n):
            xv = x[r, xo + i]
            weight[i] = xv * xv
    else:
        for i in range(n):
            xv = x[r, xo + i]
            weight[i] = qw[xo + i] * np.sqrt(sigma2 + xv * xv)


@inline
def _absmax(x, r, xo, n):
    mx = abs(x[r, xo])
    for i in range(1, n):
        mx = c_max(mx, abs(x[r, xo + i]))
    return mx


@inline
def _best_neighbour2(neighbours, off, toff64, digits, x, r, xo, weight, wo, scale, xx, L, lo, terms):
    """iq1_find_best_neighbour2: the neighbour with the least weighted squared error at ``scale`` (levels ``xx``).

    Each coordinate's term w·(scale·q − x)·(scale·q − x) takes only three values (q is one of the levels): they are
    computed once into ``terms``, and a neighbour's error is then their sum (``toff64`` = GridTables.toff64 locates
    them), in coordinate order as in ggml."""
    for i in range(8):
        w = weight[wo + i]
        xv = x[r, xo + i]
        for l in range(3):
            diff = scale * xx[l] - xv
            terms[3 * i + l] = w * diff * diff
    nn = np.int64(neighbours[off])
    best = FLT_MAX
    gi = -1
    for j in range(1, nn + 1):
        g = neighbours[off + j]
        packed = toff64[g]  # the point's 8 offsets in one load
        d2 = F32(0.0)
        for i in range(8):
            d2 += terms[np.int64((packed >> np.uint64(8 * i)) & np.uint64(0xFF))]
        if d2 < best:
            best = d2
            gi = np.int64(g)
    # (ggml then tries every grid point, scoring with an out-of-bounds read, before it asserts)
    ggml_assert(gi >= 0)
    for i in range(8):
        L[lo + i] = digits[gi, i]
    return gi


@inline
def _snap_group(kmap, neighbours, toff64, digits, x, r, xo, weight, wo, scale, xx, L, lo, terms):
    """Grid index of the 8 levels L[lo:lo+8], snapping to the best neighbour if off the grid; (index, on_grid)."""
    u = 0
    for j in range(8):
        u |= L[lo + j] << (2 * j)
    gi = np.int64(kmap[u])
    if gi >= 0:
        return gi, True
    return _best_neighbour2(neighbours, -gi - 1, toff64, digits, x, r, xo, weight, wo, scale, xx, L, lo, terms), False


@inline
def _key(qx, q2):
    """The acceptance test ``q2 > 0 && qx*qx > best*q2`` is ``_key(qx, q2) > best*q2``."""
    return qx * qx if q2 > F32(0.0) else NEG_INF


@inline
def _splits_s(sumx, sumw, i1, x_p, x_m, qxp, q2p, kp, qxm, q2m, km, width):
    """Σwxq, Σwq² and the acceptance key of the splits (i1, i2) with levels x_p and x_m (IQ1_S), summed as ggml
    sums them, for every i2 < width (those below i1 are not used).  ``width`` is opaque to the optimizer, so that
    the loop is vectorized rather than unrolled."""
    n = sumx.shape[0] - 1
    p0, p1, p2 = x_p[0], x_p[1], x_p[2]
    m0, m1, m2 = x_m[0], x_m[1], x_m[2]
    s1 = sumx[i1]
    w1 = sumw[i1]
    tx = sumx[n]
    tw = sumw[n]
    a = s1 - sumx[0]
    aw = w1 - sumw[0]
    ap = a * p0
    am = a * m0
    awp = aw * p0 * p0
    awm = aw * m0 * m0
    for i2 in range(width):
        b = sumx[i2] - s1
        c = tx - sumx[i2]
        bw = sumw[i2] - w1
        cw = tw - sumw[i2]
        sp = ap + b * p1 + c * p2
        sm = am + b * m1 + c * m2
        s2p = awp + bw * p1 * p1 + cw * p2 * p2
        s2m = awm + bw * m1 * m1 + cw * m2 * m2
        qxp[i2] = sp
        qxm[i2] = sm
        q2p[i2] = s2p
        q2m[i2] = s2m
        kp[i2] = _key(sp, s2p)
        km[i2] = _key(sm, s2m)


# ---------------------------------------------------------------------------------------------------------------------
# IQ1_S: d f16; qs u8[32] (grid index low bits); qh u16[8] (3 high bits per index ×4, 3-bit scale << 12, δ sign << 15)


@jit
def quantize_iq1_s(x, qw, kmap, neighbours, toff64, digits, out):
    n, k = x.shape
    x_p = np.array([F32(-1.0) + DELTA, DELTA, F32(1.0) + DELTA], np.float32)
    x_m = np.array([F32(-1.0) - DELTA, -DELTA, F32(1.0) - DELTA], np.float32)
    scales = np.empty(8, np.float32)
    shifts = np.empty(8, np.int64)
    weight = np.empty(32, np.float32)
    sumx = np.empty(33, np.float32)
    sumw = np.empty(33, np.float32)
    idx = np.empty(32, np.int64)
    keys = np.empty(32, np.float32)
    L = np.zeros(32, np.int64)
    index = np.zeros(4, np.int64)
    terms = np.zeros(24, np.float32)
    width = opaque(33)
    qxp = np.zeros(33, np.float32)
    q2p = np.zeros(33, np.float32)
    kp = np.zeros(33, np.float32)
    qxm = np.zeros(33, np.float32)
    q2m = np.zeros(33, np.float32)
    km = np.zeros(33, np.float32)
    for r in range(n):
        for ibl in range(k // QK_K):
            base = ibl * QK_K
            o = ibl * 50
            for j in range(50):
                out[r, o + j] = 0
            max_scale = F32(0.0)
            sumx2 = F32(0.0)
            for i in range(QK_K):
                v = x[r, base + i]
                sumx2 += v * v
            sigma2 = F32(2.0) * sumx2 / F32(QK_K)
            for ib in range(8):
                xo = base + 32 * ib
                _weights(x, r, xo, 32, qw, sigma2, weight)
                mx = _absmax(x, r, xo, 32)
                if mx < GROUP_MAX_EPS_IQ1_S:
                    scales[ib] = F32(0.0)
                    shifts[ib] = 1
                    continue
                stable_argsort(x, r, xo, 32, idx, keys)
                sumx[0] = F32(0.0)
                sumw[0] = F32(0.0)
                for j in range(32):
                    i = idx[j]
                    sumx[j + 1] = sumx[j] + weight[i] * x[r, xo + i]
                    sumw[j + 1] = sumw[j] + weight[i]
                best_score = -FLT_MAX
                scale = mx
                besti1 = -1
                besti2 = -1
                best_shift = 0
                for i1 in range(33):
                    # score the splits (i1, i2 >= i1) together, then run ggml's acceptance tests on the results
                    _splits_s(sumx, sumw, i1, x_p, x_m, qxp, q2p, kp, qxm, q2m, km, width)
                    for i2 in range(i1, 33):
                        if kp[i2] > best_score * q2p[i2]:
                            scale = qxp[i2] / q2p[i2]
                            best_score = scale * qxp[i2]
                            besti1 = i1
                            besti2 = i2
                            best_shift = 1
                        if km[i2] > best_score * q2m[i2]:
                            scale = qxm[i2] / q2m[i2]
                            best_score = scale * qxm[i2]
                            besti1 = i1
                            besti2 = i2
                            best_shift = -1
                if besti1 < 0 or besti2 < 0 or best_shift == 0:
                    scales[ib] = F32(0.0)
                    shifts[ib] = 1
                    continue
                for j in range(32):
                    L[idx[j]] = 0 if j < besti1 else (1 if j < besti2 else 2)
                if scale < F32(0.0):
                    for j in range(32):
                        L[j] = 2 - L[j]
                    scale = -scale
                    best_shift = -best_shift
                xx = x_p if best_shift == 1 else x_m
                all_on_grid = True
                for g in range(4):
                    gi, on = _snap_group(kmap, neighbours, toff64, digits, x, r, xo + 8 * g, weight, 8 * g, scale,
                                         xx, L, 8 * g, terms)
                    all_on_grid = all_on_grid and on
                    index[g] = gi
                if not all_on_grid:
                    sumqx = F32(0.0)
                    sumq2 = F32(0.0)
                    for g in range(4):
                        for j in range(8):
                            w = weight[8 * g + j]
                            q = xx[digits[index[g], j]]
                            sumqx += w * q * x[r, xo + 8 * g + j]
                            sumq2 += w * q * q
                    if sumqx > F32(0.0) and sumq2 > F32(0.0):
                        scale = sumqx / sumq2
                h = 0
                for g in range(4):
                    out[r, o + 2 + 4 * ib + g] = index[g] & 0xFF
                    h |= (index[g] >> 8) << (3 * g)
                out[r, o + 34 + 2 * ib] = h & 0xFF
                out[r, o + 35 + 2 * ib] = h >> 8
                scales[ib] = scale
                shifts[ib] = best_shift
                ggml_assert(scale >= F32(0.0))
                max_scale = c_max(max_scale, scale)
            if max_scale == F32(0.0):
                continue
            d = max_scale / F32(15.0)
            put_f16(out, r, o, d * F32(1.125))
            id_ = F32(1.0) / d
            for ib in range(8):
                l = nearest_int(F32(0.5) * (id_ * scales[ib] - F32(1.0)))
                l = max(0, min(7, l))
                if shifts[ib] == -1:
                    l |= 8
                out[r, o + 35 + 2 * ib] |= l << 4


@inline
def _splits_m(px, pw, i1, p2, m2, cp1, cp2, cm1, cm2, sqx, sq2, skey, width):
    """IQ1_M's scores of the splits (i1, i2), every i2 < width, for the four sign choices k (δ sign of the first
    half: + for k < 2; of the second: + for even k), summed as ggml sums them (from per-half prefix sums, since the
    levels step by 1: a split's Σwxq is T·v₂ − S[i1] − S[i2] per half); with the acceptance keys."""
    tx0 = px[0, px.shape[1] - 1]
    tx1 = px[1, px.shape[1] - 1]
    tw0 = pw[0, pw.shape[1] - 1]
    tw1 = pw[1, pw.shape[1] - 1]
    a0 = px[0, i1]
    a1 = px[1, i1]
    c0p = tw0 * p2 * p2 + pw[0, i1] * cp1
    c0m = tw0 * m2 * m2 + pw[0, i1] * cm1
    c1p = tw1 * p2 * p2 + pw[1, i1] * cp1
    c1m = tw1 * m2 * m2 + pw[1, i1] * cm1
    for i2 in range(width):
        sx0 = a0 + px[0, i2]
        sx1 = a1 + px[1, i2]
        qx_p0 = tx0 * p2 - sx0
        qx_m0 = tx0 * m2 - sx0
        qx_p1 = tx1 * p2 - sx1
        qx_m1 = tx1 * m2 - sx1
        q2_p0 = c0p + pw[0, i2] * cp2
        q2_m0 = c0m + pw[0, i2] * cm2
        q2_p1 = c1p + pw[1, i2] * cp2
        q2_m1 = c1m + pw[1, i2] * cm2
        v = qx_p0 + qx_p1
        v2 = q2_p0 + q2_p1
        sqx[0, i2] = v
        sq2[0, i2] = v2
        skey[0, i2] = _key(v, v2)
        v = qx_p0 + qx_m1
        v2 = q2_p0 + q2_m1
        sqx[1, i2] = v
        sq2[1, i2] = v2
        skey[1, i2] = _key(v, v2)
        v = qx_m0 + qx_p1
        v2 = q2_m0 + q2_p1
        sqx[2, i2] = v
        sq2[2, i2] = v2
        skey[2, i2] = _key(v, v2)
        v = qx_m0 + qx_m1
        v2 = q2_m0 + q2_m1
        sqx[3, i2] = v
        sq2[3, i2] = v2
        skey[3, i2] = _key(v, v2)


# ---------------------------------------------------------------------------------------------------------------------
# IQ1_M: qs u8[32]; qh u8[16] (3 high index bits + δ sign bit, per group of 8); scales u8[8] = u16[4] (3-bit
# sub-block scales, the fp16 super-block scale spread over the top nibbles)


@jit
def quantize_iq1_m(x, qw, kmap, neighbours, toff64, digits, out):
    n, k = x.shape
    x_p = np.array([F32(-1.0) + DELTA, DELTA, F32(1.0) + DELTA], np.float32)
    x_m = np.array([F32(-1.0) - DELTA, -DELTA, F32(1.0) - DELTA], np.float32)
    masks = np.array([0x00, 0x80, 0x08, 0x88], np.int64)
    scales = np.empty(16, np.float32)
    shifts = np.empty(16, np.int64)
    weight = np.empty(16, np.float32)
    idx = np.empty(16, np.int64)
    keys = np.empty(16, np.float32)
    px = np.empty((2, 17), np.float32)
    pw = np.empty((2, 17), np.float32)
    L = np.zeros(16, np.int64)
    index = np.zeros(2, np.int64)
    terms = np.zeros(24, np.float32)
    sc = np.zeros(4, np.int64)
    width = opaque(17)
    splx = np.zeros((4, 17), np.float32)
    spl2 = np.zeros((4, 17), np.float32)
    splk = np.zeros((4, 17), np.float32)
    p2 = x_p[2]
    m2 = x_m[2]
    cp1 = x_p[0] * x_p[0] - x_p[1] * x_p[1]
    cp2 = x_p[1] * x_p[1] - x_p[2] * x_p[2]
    cm1 = x_m[0] * x_m[0] - x_m[1] * x_m[1]
    cm2 = x_m[1] * x_m[1] - x_m[2] * x_m[2]
    for r in range(n):
        for ibl in range(k // QK_K):
            base = ibl * QK_K
            o = ibl * 56
            for j in range(56):
                out[r, o + j] = 0
            max_scale = F32(0.0)
            sumx2 = F32(0.0)
            for i in range(QK_K):
                v = x[r, base + i]
                sumx2 += v * v
            sigma2 = F32(2.0) * sumx2 / F32(QK_K)
            for ib in range(16):
                xo = base + 16 * ib
                _weights(x, r, xo, 16, qw, sigma2, weight)
                mx = _absmax(x, r, xo, 16)
                if mx < GROUP_MAX_EPS_IQ1_M:
                    scales[ib] = F32(0.0)
                    shifts[ib] = 0
                    continue
                stable_argsort(x, r, xo, 16, idx, keys)
                best_score = -FLT_MAX
                scale = mx
                besti1 = -1
                besti2 = -1
                best_k = -1
                # prefix sums per half of the sub-block (each half has its own δ sign)
                px[0, 0] = F32(0.0)
                px[1, 0] = F32(0.0)
                pw[0, 0] = F32(0.0)
                pw[1, 0] = F32(0.0)
                for j in range(16):
                    i = idx[j]
                    h = 0 if i < 8 else 1
                    px[h, j + 1] = px[h, j] + weight[i] * x[r, xo + i]
                    px[1 - h, j + 1] = px[1 - h, j]
                    pw[h, j + 1] = pw[h, j] + weight[i]
                    pw[1 - h, j + 1] = pw[1 - h, j]
                for i1 in range(17):
                    # score the splits (i1, i2 >= i1) together, then run ggml's acceptance tests on the results
                    _splits_m(px, pw, i1, p2, m2, cp1, cp2, cm1, cm2, splx, spl2, splk, width)
                    for i2 in range(i1, 17):
                        for kk in range(4):
                            if splk[kk, i2] > best_score * spl2[kk, i2]:
                                scale = splx[kk, i2] / spl2[kk, i2]
                                best_score = scale * splx[kk, i2]
                                besti1 = i1
                                besti2 = i2
                                best_k = kk
                if besti1 < 0 or besti2 < 0 or best_k < 0:
                    scales[ib] = F32(0.0)
                    shifts[ib] = 0
                    continue
                for j in range(16):
                    L[idx[j]] = 0 if j < besti1 else (1 if j < besti2 else 2)
                if scale < F32(0.0):
                    for j in range(16):
                        L[j] = 2 - L[j]
                    scale = -scale
                    best_k = 3 - best_k
                all_on_grid = True
                for g in range(2):
                    xx = (x_p if best_k < 2 else x_m) if g == 0 else (x_p if best_k % 2 == 0 else x_m)
                    gi, on = _snap_group(kmap, neighbours, toff64, digits, x, r, xo + 8 * g, weight, 8 * g, scale,
                                         xx, L, 8 * g, terms)
                    all_on_grid = all_on_grid and on
                    index[g] = gi
                if not all_on_grid:
                    sqx = F32(0.0)
                    sq2 = F32(0.0)
                    for g in range(2):
                        xx = (x_p if best_k < 2 else x_m) if g == 0 else (x_p if best_k % 2 == 0 else x_m)
                        for j in range(8):
                            w = weight[8 * g + j]
                            q = xx[digits[index[g], j]]
                            sqx += w * q * x[r, xo + 8 * g + j]
                            sq2 += w * q * q
                    if sqx > F32(0.0) and sq2 > F32(0.0):
                        scale = sqx / sq2
                out[r, o + 2 * ib] = index[0] & 0xFF
                out[r, o + 2 * ib + 1] = index[1] & 0xFF
                out[r, o + 32 + ib] = (index[0] >> 8) | ((index[1] >> 8) << 4)
                scales[ib] = scale
                shifts[ib] = best_k
                ggml_assert(scale >= F32(0.0))
                max_scale = c_max(max_scale, scale)
            if max_scale == F32(0.0):
                continue
            sc[:] = 0
            d = max_scale / F32(15.0)
            id_ = F32(1.0) / d
            sqx = F32(0.0)
            sq2 = F32(0.0)
            for ib in range(16):
                l = nearest_int(F32(0.5) * (id_ * scales[ib] - F32(1.0)))
                l = max(0, min(7, l))
                sc[ib // 4] |= l << (3 * (ib % 4))
                qh = np.int64(out[r, o + 32 + ib]) | masks[shifts[ib]]
                out[r, o + 32 + ib] = qh
                xo = base + 16 * ib
                _weights(x, r, xo, 16, qw, sigma2, weight)
                fl = F32(2 * l + 1)
                for g in range(2):
                    xx = (x_p if shifts[ib] < 2 else x_m) if g == 0 else (x_p if shifts[ib] % 2 == 0 else x_m)
                    gi = np.int64(out[r, o + 2 * ib + g]) + ((qh << (8 - 4 * g)) & 0x700)
                    for j in range(8):
                        w = weight[8 * g + j]
                        q = xx[digits[gi, j]] * fl
                        sqx += w * q * x[r, xo + 8 * g + j]
                        sq2 += w * q * q
            if sq2 > F32(0.0):
                d = sqx / sq2
            s = np.int64(fp32_to_fp16(d * F32(1.1125)))
            sc[0] |= (s & 0x000F) << 12
            sc[1] |= (s & 0x00F0) << 8
            sc[2] |= (s & 0x0F00) << 4
            sc[3] |= s & 0xF000
            for j in range(4):
                out[r, o + 48 + 2 * j] = sc[j] & 0xFF
                out[r, o + 49 + 2 * j] = (sc[j] >> 8) & 0xFF


# ---------------------------------------------------------------------------------------------------------------------
# dequantization (ggml's dequantize_row_iq1_s / _m)


@jit
def dequantize_iq1_s(data, digits, values, out):
    for r in range(data.shape[0]):
        for ibl in range(out.shape[1] // QK_K):
            o = ibl * 50
            d = get_f16(data, r, o)
            for ib in range(8):
                qh = np.int64(data[r, o + 34 + 2 * ib]) | (np.int64(data[r, o + 35 + 2 * ib]) << 8)
                dl = d * F32(2 * ((qh >> 12) & 7) + 1)
                delta = -DELTA if qh & 0x8000 else DELTA
                for g in range(4):
                    gi = np.int64(data[r, o + 2 + 4 * ib + g]) | (((qh >> (3 * g)) & 7) << 8)
                    y = ibl * QK_K + 32 * ib + 8 * g
                    for j in range(8):
                        out[r, y + j] = dl * (values[digits[gi, j]] + delta)


@jit
def dequantize_iq1_m(data, digits, values, out):
    for r in range(data.shape[0]):
        for ibl in range(out.shape[1] // QK_K):
            o = ibl * 56
            sc0 = np.int64(data[r, o + 48]) | (np.int64(data[r, o + 49]) << 8)
            sc1 = np.int64(data[r, o + 50]) | (np.int64(data[r, o + 51]) << 8)
            sc2 = np.int64(data[r, o + 52]) | (np.int64(data[r, o + 53]) << 8)
            sc3 = np.int64(data[r, o + 54]) | (np.int64(data[r, o + 55]) << 8)
            d = fp16_to_fp32(np.uint16((sc0 >> 12) | ((sc1 >> 8) & 0x00F0) | ((sc2 >> 4) & 0x0F00)
                                       | (sc3 & 0xF000)))
            for ib in range(8):
                sc = np.int64(data[r, o + 48 + 2 * (ib // 2)]) | (np.int64(data[r, o + 49 + 2 * (ib // 2)]) << 8)
                dl1 = d * F32(2 * ((sc >> (6 * (ib % 2))) & 7) + 1)
                dl2 = d * F32(2 * ((sc >> (6 * (ib % 2) + 3)) & 7) + 1)
                qh0 = np.int64(data[r, o + 32 + 2 * ib])
                qh1 = np.int64(data[r, o + 33 + 2 * ib])
                for g in range(4):
                    qh = qh0 if g < 2 else qh1
                    gi = np.int64(data[r, o + 4 * ib + g]) | ((qh << (8 - 4 * (g % 2))) & 0x700)
                    hi = 0x80 if g % 2 else 0x08
                    delta = -DELTA if qh & hi else DELTA
                    dl = dl1 if g < 2 else dl2
                    y = ibl * QK_K + 32 * ib + 8 * g
                    for j in range(8):
                        out[r, y + j] = dl * (values[digits[gi, j]] + delta)
