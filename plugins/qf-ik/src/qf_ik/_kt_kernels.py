"""numba kernels for ik_llama.cpp's trellis types IQ1_KT, IQ2_KT, IQ3_KT, IQ4_KT (``QuantizerIQKT`` in
iqk_quantize.cpp).

A group of 8 (IQ4_KT: 4) values is one of 2^13..2^16 pseudo-random vectors generated from its index; the search finds
the nearest candidate within a cluster of candidates.  ik's quantizer runs only its AVX2 code here (the scalar
``find_best_match`` is a stub), so these kernels reproduce the AVX2 arithmetic: 8-lane accumulators with fused
multiply-adds (:func:`fma32`, exact single rounding), ik's horizontal-sum orders, and the lane-wise tie-breaking
of its minimum searches.

Every row starts with a float32 scale (row_meta_size = 4).
"""

from __future__ import annotations

from functools import cache

import numpy as np
from qf.kernels import F32, inline, jit, nearest_int

from qf_ik._common import get_f32, put_f32, std_max
from qf_ik._k_kernels import bidx, tab4
from qf_ik._tables import IQ4K_VALUES

QK_K = 256
V4 = IQ4K_VALUES.astype(np.float32)
INF32 = F32(np.inf)
K_EPS2 = F32(1e-14)
K_WEIGHT = F32(1e-4)


# --------------------------------------------------------------------------------------------------- arithmetic
@inline
def fma32(a, b, c):
    """fmaf(a, b, c): a·b + c rounded once to float32 (what _mm256_fmadd_ps computes per lane)."""
    p = np.float64(a) * np.float64(b)  # exact
    cc = np.float64(c)
    s = p + cc
    bb = s - p
    err = (p - (s - bb)) + (cc - bb)  # s + err == p + c exactly (TwoSum)
    r = F32(s)
    if err != 0.0:
        rs = np.float64(r)
        if rs != s and np.isfinite(rs):
            # s itself was rounded: only a tie between two float32 can come out wrong
            other = np.nextafter(r, INF32) if rs < s else np.nextafter(r, -INF32)
            mid = (rs + np.float64(other)) * 0.5
            if mid == s and (err > 0.0) == (np.float64(other) > rs):
                r = other
    return r


@inline
def hsum8(s0, s1, s2, s3, s4, s5, s6, s7):
    """ik's hsum_float_8 (and each lane of hsum_float_8x8): ((s0+s4)+(s2+s6)) + ((s1+s5)+(s3+s7))."""
    return ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7))


# --------------------------------------------------------------------------------------------------- quantizers
def _values(num_bits: int, group: int, offset: int, is_abs: bool) -> np.ndarray:
    """QuantizerIQKT::set_values for every index (is_int: the sum of 4 bytes of x·0xCBAC1FED, minus 126)."""
    n = 1 << num_bits
    x = np.arange(n, dtype=np.uint64) + np.uint64(offset)
    out = np.empty((n, group), np.float32)
    for k in range(group):
        x = (x * np.uint64(0xCBAC1FED)) & np.uint64(0xFFFFFFFF)
        s = (x & np.uint64(0x3F3F3F3F)).astype(np.int64)
        total = (s & 0xFF) + ((s >> 8) & 0xFF) + ((s >> 16) & 0xFF) + ((s >> 24) & 0xFF)
        v = total.astype(np.float32) - np.float32(126.0)
        out[:, k] = np.abs(v) if is_abs else v
    return out


@jit
def _bin5(x):
    if x < F32(-48.0):
        return 0
    if x < F32(-16.0):
        return 1
    if x < F32(16.0):
        return 2
    if x < F32(48.0):
        return 3
    return 4


@jit
def _cluster_means(values, mid, ncluster):
    """cluster_points' shortcut for 256 clusters of 8 (sign pattern against mid) or 625 of 4 (bin5 per value)."""
    npoint, ndim = values.shape
    sump = np.zeros((ncluster, ndim), np.float32)
    counts = np.zeros(ncluster, np.int64)
    for ip in range(npoint):
        u = 0
        if ndim == 8:
            for k in range(8):
                if values[ip, k] > mid[k]:
                    u |= 1 << k
        else:
            s = 1
            for k in range(4):
                u += s * _bin5(values[ip, k])
                s *= 5
        counts[u] += 1
        for k in range(ndim):
            sump[u, k] += values[ip, k]
    result = np.zeros((ncluster, ndim), np.float32)
    for ic in range(ncluster):
        if counts[ic] > 0:
            for k in range(ndim):
                result[ic, k] = sump[ic, k] / F32(counts[ic])
    return result


@jit
def _nearest_clusters(values, clusters, nn):
    """finalize_clusters, first part: the nn nearest clusters of every point (insertion into a sorted list)."""
    npoint, ndim = values.shape
    ncluster = clusters.shape[0]
    which = np.empty((npoint, nn), np.int64)
    best = np.empty(nn, np.float32)
    ibest = np.empty(nn, np.int64)
    for ip in range(npoint):
        for j in range(nn):
            best[j] = INF32
            ibest[j] = -1
        for ic in range(ncluster):
            dist2 = F32(0.0)
            for k in range(ndim):
                d = values[ip, k] - clusters[ic, k]
                dist2 += d * d
            for j in range(nn):
                if dist2 < best[j]:
                    for t in range(nn - 1, j, -1):
                        best[t] = best[t - 1]
                        ibest[t] = ibest[t - 1]
                    best[j] = dist2
                    ibest[j] = ic
                    break
        for j in range(nn):
            which[ip, j] = ibest[j]
    return which


@jit
def _extra_points(values, center, which, ic):
    """Points not yet in cluster ic, with their distance to its center (for padding it to a multiple of 8)."""
    npoint, ndim = values.shape
    nn = which.shape[1]
    d2 = np.empty(npoint, np.float32)
    ids = np.empty(npoint, np.int64)
    m = 0
    for ip in range(npoint):
        skip = False
        for j in range(nn):
            if which[ip, j] == ic:
                skip = True
                break
        if skip:
            continue
        dist2 = F32(0.0)
        for k in range(ndim):
            d = values[ip, k] - center[k]
            dist2 += d * d
        d2[m] = dist2
        ids[m] = ip
        m += 1
    return d2[:m], ids[:m]


class Quantizer:
    """The tables of one QuantizerIQKT: ``values`` (n, group), ``mid``, ``clusters``, and each cluster's points as
    ``starts`` (ncluster + 1) into ``points`` (an empty cluster searches all values)."""

    def __init__(self, num_bits: int, group: int, is_abs: bool, ncluster: int, nn: int, offset: int = 4096):
        values = _values(num_bits, group, offset, is_abs)
        self.values = values
        mid = np.zeros(8, np.float32)
        if is_abs:
            n = values.shape[0]
            for k in range(group):
                p = np.sort(values[:, k].astype(np.int64))  # std::vector<int> P: the values truncated to int
                mid[k] = np.float32(0.5) * np.float32(p[n // 2] + p[n // 2 - 1]) if n % 2 == 0 else p[n // 2]
        else:
            lo = values.min(axis=0)
            hi = values.max(axis=0)
            mid[:group] = np.float32(0.5) * (lo + hi)
        self.mid = mid
        self.clusters = _cluster_means(values, mid, ncluster)
        which = _nearest_clusters(values, self.clusters, nn)
        members: list[list[int]] = [[] for _ in range(ncluster)]
        for ip in range(values.shape[0]):
            for j in range(nn):
                members[which[ip, j]].append(ip)
        for ic in range(ncluster):
            pts = members[ic]
            if not pts or len(pts) % 8 == 0:
                continue
            d2, ids = _extra_points(values, self.clusters[ic], which, ic)
            order = np.lexsort((ids, d2))  # std::sort of (dist2, index) pairs
            nadd = 8 * ((len(pts) + 7) // 8) - len(pts)
            pts.extend(int(i) for i in ids[order[:nadd]])
        self.starts = np.zeros(ncluster + 1, np.int64)
        self.starts[1:] = np.cumsum([len(p) for p in members])
        self.points = np.array([i for p in members for i in p], np.int64)
        self.cvalues = values[self.points] if len(self.points) else np.zeros((0, group), np.float32)


@cache
def quantizer(name: str) -> Quantizer:
    if name == "IQ1_KT":
        return Quantizer(13, 8, False, 256, 32)
    if name == "IQ2_KT":
        return Quantizer(16, 8, False, 256, 8)
    if name == "IQ3_KT":
        return Quantizer(16, 8, True, 256, 8)
    if name == "IQ4_KT":
        return Quantizer(15, 4, False, 625, 6)
    if name == "IQ4_KT_2":
        return Quantizer(15, 4, False, 625, 6, 4096 + 32768)
    raise KeyError(name)


# ------------------------------------------------------------------------------------------------ the searches
@jit
def find_best_match8(values, mid, starts, points, cvalues, d, x, xo, w, wo, best_idx, bo):
    """find_best_match, groups of 8 with 256 clusters (IQ1/2/3_KT): best_idx[bo:bo+4] for the 32 values at
    x[xo:], weights w[wo:]."""
    if d == F32(0.0):
        for l in range(4):
            best_idx[bo + l] = 0
        return
    inv = F32(1.0) / d
    vx = np.empty(8, np.float32)
    sbest = np.empty(8, np.float32)
    ibest = np.empty(8, np.int64)
    for l in range(4):
        u = 0
        for k in range(8):
            vx[k] = inv * x[xo + 8 * l + k]
            if vx[k] > mid[k]:
                u |= 1 << k
        s0 = starts[u]
        npt = starts[u + 1] - s0
        use_all = npt == 0
        if use_all:
            npt = values.shape[0]
        for i in range(8):
            sbest[i] = INF32
            ibest[i] = -1
        for p in range(npt):
            q = values[p] if use_all else cvalues[s0 + p]
            e0 = q[0] - vx[0]
            e1 = q[1] - vx[1]
            e2 = q[2] - vx[2]
            e3 = q[3] - vx[3]
            e4 = q[4] - vx[4]
            e5 = q[5] - vx[5]
            e6 = q[6] - vx[6]
            e7 = q[7] - vx[7]
            w_ = wo + 8 * l
            score = hsum8(w[w_] * (e0 * e0), w[w_ + 1] * (e1 * e1), w[w_ + 2] * (e2 * e2), w[w_ + 3] * (e3 * e3),
                          w[w_ + 4] * (e4 * e4), w[w_ + 5] * (e5 * e5), w[w_ + 6] * (e6 * e6), w[w_ + 7] * (e7 * e7))
            lane = p & 7
            if score < sbest[lane]:
                sbest[lane] = score
                ibest[lane] = p
        best = INF32
        jbest = -1
        for i in range(8):
            if sbest[i] < best:
                best = sbest[i]
                jbest = ibest[i]
        best_idx[bo + l] = jbest if use_all else points[s0 + jbest]


@jit
def find_best_scale(values, group, x, xo, w, wo, best_idx, bo):
    """find_best_scale (AVX2): lane k sums elements k, k+8, k+16, k+24 with FMAs; returns (d, score)."""
    qx = np.zeros(8, np.float32)
    q2 = np.zeros(8, np.float32)
    for l in range(0, 32, 8):
        for k in range(8):
            j = l + k
            q = values[best_idx[bo + j // group], j % group]
            qw = q * w[wo + j]
            qx[k] = fma32(qw, x[xo + j], qx[k])
            q2[k] = fma32(qw, q, q2[k])
    sumqx = hsum8(qx[0], qx[1], qx[2], qx[3], qx[4], qx[5], qx[6], qx[7])
    sumq2 = hsum8(q2[0], q2[1], q2[2], q2[3], q2[4], q2[5], q2[6], q2[7])
    if sumq2 > F32(0.0):
        return sumqx / sumq2, sumqx * sumqx / sumq2
    return F32(0.0), F32(0.0)


@jit
def set_weights(sigma2_scale, x, r, imatrix, use_qw, weights):
    """QuantizerIQKT::set_weights (blocks of 32): weights for the whole row."""
    n = x.shape[1]
    for ibl in range(n // QK_K):
        xo = ibl * QK_K
        sumx2 = F32(0.0)
        for j in range(QK_K):
            sumx2 += x[r, xo + j] * x[r, xo + j]
        if sumx2 < K_EPS2 * F32(256.0):
            for j in range(QK_K):
                weights[xo + j] = K_WEIGHT
            continue
        sigma2 = sigma2_scale * sumx2 / F32(256.0)
        if use_qw:
            for ib in range(8):
                b = xo + 32 * ib
                sumwx = F32(0.0)
                sumw2 = F32(0.0)
                sx2 = F32(0.0)
                for j in range(32):
                    xv = x[r, b + j]
                    wv = imatrix[b + j] * np.sqrt(sigma2 + xv * xv)
                    weights[b + j] = wv
                    sumwx += wv * np.abs(xv)
                    sumw2 += wv * wv
                    sx2 += xv * xv
                if sx2 < K_EPS2 or sumw2 < K_EPS2 or sumwx < K_EPS2:
                    for j in range(32):
                        weights[b + j] = K_WEIGHT
        else:
            for j in range(QK_K):
                xv = x[r, xo + j]
                weights[xo + j] = F32(0.25) * sigma2 + xv * xv


# ------------------------------------------------------------------------------------------------------- IQ2_KT
IQ2_KT_BYTES = 4 + 64


@jit
def quantize_iq2_kt(values, mid, starts, points, cvalues, x, imatrix, out):
    n, k = x.shape
    nbl = k // QK_K
    use_qw = imatrix.shape[0] > 0
    weights = np.empty(k, np.float32)
    scales = np.empty(k // 32, np.float32)
    all_idx = np.zeros(k // 8, np.int64)
    best_idx = np.zeros(8, np.int64)
    xr = np.empty(k, np.float32)
    for r in range(n):
        for j in range(k):
            xr[j] = x[r, j]
        for b in range(out.shape[1]):
            out[r, b] = 0
        set_weights(F32(2.0), x, r, imatrix, use_qw, weights)
        amax_row = F32(0.0)
        for j in range(k):
            amax_row = std_max(amax_row, np.abs(xr[j]))
        amax_scale = F32(0.0)
        max_scale = F32(0.0)
        for ibl in range(nbl):
            for ib in range(8):
                xo = ibl * QK_K + 32 * ib
                amax = F32(0.0)
                for j in range(32):
                    amax = std_max(amax, np.abs(xr[xo + j]))
                if amax < F32(1e-16):
                    scales[8 * ibl + ib] = F32(0.0)
                    for ig in range(4):
                        all_idx[xo // 8 + ig] = 0
                    continue
                scale_0 = std_max(F32(90.0), F32(124.0) * amax / amax_row)
                find_best_match8(values, mid, starts, points, cvalues, amax / scale_0, xr, xo, weights, xo, best_idx, 0)
                dp, score_p = find_best_scale(values, 8, xr, xo, weights, xo, best_idx, 0)
                find_best_match8(values, mid, starts, points, cvalues, -amax / scale_0, xr, xo, weights, xo,
                                 best_idx, 4)
                dm, score_m = find_best_scale(values, 8, xr, xo, weights, xo, best_idx, 4)
                if score_p > score_m:
                    sc = dp
                    bo = 0
                else:
                    sc = dm
                    bo = 4
                scales[8 * ibl + ib] = sc
                for ig in range(4):
                    all_idx[xo // 8 + ig] = best_idx[bo + ig]
                a = np.abs(sc)
                if a > amax_scale:
                    amax_scale = a
                    max_scale = sc
        if max_scale == F32(0.0):
            put_f32(out, r, 0, F32(0.0))
            continue
        d = max_scale / V4[0]
        best = F32(0.0)
        for itry in range(-9, 10):
            inv = (F32(itry) + V4[0]) / max_scale
            sumqx = F32(0.0)
            sumq2 = F32(0.0)
            for ib in range(k // 32):
                ls = bidx(tab4(), 0, inv * scales[ib])
                dl = V4[ls]
                for ig in range(4):
                    gi = all_idx[4 * ib + ig]
                    for j in range(8):
                        jj = 32 * ib + 8 * ig + j
                        q = dl * values[gi, j]
                        sumqx += weights[jj] * xr[jj] * q
                        sumq2 += weights[jj] * q * q
            if sumq2 > F32(0.0) and sumqx * sumqx > best * sumq2:
                d = sumqx / sumq2
                best = d * sumqx
        inv = F32(1.0) / d if d != F32(0.0) else F32(0.0)
        for ibl in range(nbl):
            o = 4 + ibl * 68
            for ib in range(4):
                ls1 = bidx(tab4(), 0, inv * scales[8 * ibl + ib])
                ls2 = bidx(tab4(), 0, inv * scales[8 * ibl + ib + 4])
                out[r, o + ib] = ls1 | (ls2 << 4)
        put_f32(out, r, 0, d)
        if d == F32(0.0):
            continue
        sumqx = F32(0.0)
        sumq2 = F32(0.0)
        for ibl in range(nbl):
            o = 4 + ibl * 68
            for ib in range(8):
                xo = ibl * QK_K + 32 * ib
                ls = np.int64(V4[(out[r, o + ib % 4] >> (4 * (ib // 4))) & 0xF])
                dl = d * F32(ls)
                find_best_match8(values, mid, starts, points, cvalues, dl, xr, xo, weights, xo, best_idx, 0)
                mse1 = F32(0.0)
                mse2 = F32(0.0)
                for ig in range(4):
                    p1 = all_idx[xo // 8 + ig]
                    p2 = best_idx[ig]
                    for j in range(8):
                        jj = xo + 8 * ig + j
                        diff1 = xr[jj] - dl * values[p1, j]
                        diff2 = xr[jj] - dl * values[p2, j]
                        mse1 += weights[jj] * diff1 * diff1
                        mse2 += weights[jj] * diff2 * diff2
                if mse1 < mse2:
                    for ig in range(4):
                        best_idx[ig] = all_idx[xo // 8 + ig]
                else:
                    for ig in range(4):
                        all_idx[xo // 8 + ig] = best_idx[ig]
                for g in range(4):
                    qi = best_idx[g]
                    qo = o + 4 + 2 * (4 * ib + g)
                    out[r, qo] = qi & 0xFF
                    out[r, qo + 1] = (qi >> 8) & 0xFF
                    for kk in range(8):
                        jj = xo + 8 * g + kk
                        q = values[qi, kk] * F32(ls)
                        sumqx += weights[jj] * xr[jj] * q
                        sumq2 += weights[jj] * q * q
        if sumq2 > F32(0.0):
            put_f32(out, r, 0, sumqx / sumq2)


@jit
def dequantize_iq2_kt(values, data, n_per_row, out):
    for r in range(data.shape[0]):
        d = get_f32(data, r, 0)  # kScale = 1 for the integer trellis
        for ibl in range(n_per_row // QK_K):
            o = 4 + ibl * IQ2_KT_BYTES
            for ib in range(8):
                sl = d * V4[(data[r, o + ib % 4] >> (4 * (ib // 4))) & 0xF]
                for g in range(4):
                    qo = o + 4 + 2 * (4 * ib + g)
                    qi = np.int64(data[r, qo]) | (np.int64(data[r, qo + 1]) << 8)
                    y = ibl * QK_K + 32 * ib + 8 * g
                    for kk in range(8):
                        out[r, y + kk] = sl * values[qi, kk]



@jit
def find_best_match4(starts, points, cvalues, d, x, xo, w, wo, best_idx, bo):
    """find_best_match, groups of 4 with 625 clusters (IQ4_KT): best_idx[bo:bo+8] for the 32 values at x[xo:].
    ik scores 8 candidates per step with hsum_float_4x8, whose lanes hold candidates 0,2,4,6,1,3,5,7."""
    if d == F32(0.0):
        for l in range(8):
            best_idx[bo + l] = 0
        return
    inv = F32(1.0) / d
    vx = np.empty(4, np.float32)
    sbest = np.empty(8, np.float32)
    ibest = np.empty(8, np.int64)
    for l in range(8):
        u = 0
        s = 1
        for k in range(4):
            vx[k] = inv * x[xo + 4 * l + k]
            u += _bin5(vx[k]) * s
            s *= 5
        s0 = starts[u]
        npt = starts[u + 1] - s0
        for i in range(8):
            sbest[i] = INF32
            ibest[i] = -1
        w_ = wo + 4 * l
        for p in range(npt):
            q = cvalues[s0 + p]
            e0 = q[0] - vx[0]
            e1 = q[1] - vx[1]
            e2 = q[2] - vx[2]
            e3 = q[3] - vx[3]
            score = (((w[w_] * (e0 * e0)) + (w[w_ + 2] * (e2 * e2)))
                     + ((w[w_ + 1] * (e1 * e1)) + (w[w_ + 3] * (e3 * e3))))
            t = p & 7
            lane = (t >> 1) if (t & 1) == 0 else 4 + (t >> 1)
            if score < sbest[lane]:
                sbest[lane] = score
                ibest[lane] = p
        best = INF32
        jbest = -1
        for i in range(8):
            if sbest[i] < best:
                best = sbest[i]
                jbest = ibest[i]
        best_idx[bo + l] = points[s0 + jbest]


# ------------------------------------------------------------------------------------------------------- IQ3_KT
IQ3_KT_BYTES = 4 + 64 + 32


@jit
def quantize_iq3_kt(values, mid, starts, points, cvalues, x, imatrix, out):
    n, k = x.shape
    nbl = k // QK_K
    use_qw = imatrix.shape[0] > 0
    weights = np.empty(k, np.float32)
    scales = np.zeros(k // 32, np.float32)
    qtmp = np.zeros(k, np.float32)
    best_idx = np.zeros(8, np.int64)
    xa = np.empty(k, np.float32)
    for r in range(n):
        for b in range(out.shape[1]):
            out[r, b] = 0
        amax_row = F32(0.0)
        for j in range(k):
            xa[j] = np.abs(x[r, j])
            amax_row = std_max(amax_row, xa[j])
        if amax_row == F32(0.0):
            continue
        set_weights(F32(2.0), x, r, imatrix, use_qw, weights)
        amax_scale = F32(0.0)
        max_scale = F32(0.0)
        for ibl in range(nbl):
            for ib in range(8):
                xo = ibl * QK_K + 32 * ib
                amax = F32(0.0)
                for j in range(32):
                    amax = std_max(amax, xa[xo + j])
                if amax < F32(1e-16):
                    scales[8 * ibl + ib] = F32(0.0)
                    continue
                scale_0 = std_max(F32(84.0), F32(123.0) * amax / amax_row)
                best = F32(0.0)
                for itry in range(-3, 4):
                    find_best_match8(values, mid, starts, points, cvalues, amax / (scale_0 + F32(8.0) * F32(itry)),
                                     xa, xo, weights, xo, best_idx, 0)
                    dd, score = find_best_scale(values, 8, xa, xo, weights, xo, best_idx, 0)
                    if score > best:
                        best = score
                        scales[8 * ibl + ib] = dd
                        for g in range(4):
                            best_idx[4 + g] = best_idx[g]
                for g in range(4):
                    for j in range(8):
                        qtmp[xo + 8 * g + j] = values[best_idx[4 + g], j]
                a = np.abs(scales[8 * ibl + ib])
                if a > amax_scale:
                    amax_scale = a
                    max_scale = scales[8 * ibl + ib]
        d = max_scale / F32(15.0)
        best = F32(0.0)
        for itry in range(-9, 10):
            inv = (F32(itry) * F32(0.2) + F32(15.0)) / max_scale
            sumqx = F32(0.0)
            sumq2 = F32(0.0)
            for ib in range(k // 32):
                ls = nearest_int(inv * scales[ib])
                ls = max(0, min(15, ls))
                dl = F32(ls)
                for j in range(32):
                    jj = 32 * ib + j
                    q = dl * qtmp[jj]
                    sumqx += weights[jj] * xa[jj] * q
                    sumq2 += weights[jj] * q * q
            if sumq2 > F32(0.0) and sumqx * sumqx > best * sumq2:
                d = sumqx / sumq2
                best = d * sumqx
        inv = F32(1.0) / d if d != F32(0.0) else F32(0.0)
        for ibl in range(nbl):
            o = 4 + ibl * 100
            for ib in range(4):
                ls1 = max(0, min(15, nearest_int(inv * scales[8 * ibl + ib])))
                ls2 = max(0, min(15, nearest_int(inv * scales[8 * ibl + ib + 4])))
                out[r, o + ib] = ls1 | (ls2 << 4)
        put_f32(out, r, 0, d)
        sumqx = F32(0.0)
        sumq2 = F32(0.0)
        for ibl in range(nbl):
            o = 4 + ibl * 100
            for ib in range(8):
                xo = ibl * QK_K + 32 * ib
                for j in range(32):
                    if x[r, xo + j] < F32(0.0):
                        out[r, o + 68 + j] |= 1 << ib
                ls = np.int64((out[r, o + ib % 4] >> (4 * (ib // 4))) & 0xF)
                dl = d * F32(ls)
                find_best_match8(values, mid, starts, points, cvalues, dl, xa, xo, weights, xo, best_idx, 0)
                for g in range(4):
                    qi = best_idx[g]
                    qo = o + 4 + 2 * (4 * ib + g)
                    out[r, qo] = qi & 0xFF
                    out[r, qo + 1] = (qi >> 8) & 0xFF
                    for kk in range(8):
                        jj = xo + 8 * g + kk
                        q = values[qi, kk] * F32(ls)
                        sumqx += weights[jj] * xa[jj] * q
                        sumq2 += weights[jj] * q * q
        if sumq2 > F32(0.0):
            put_f32(out, r, 0, sumqx / sumq2)


@jit
def dequantize_iq3_kt(values, data, n_per_row, out):
    for r in range(data.shape[0]):
        d = get_f32(data, r, 0)
        for ibl in range(n_per_row // QK_K):
            o = 4 + ibl * IQ3_KT_BYTES
            for ib in range(8):
                sl = d * F32((data[r, o + ib % 4] >> (4 * (ib // 4))) & 0xF)
                for g in range(4):
                    qo = o + 4 + 2 * (4 * ib + g)
                    qi = np.int64(data[r, qo]) | (np.int64(data[r, qo + 1]) << 8)
                    y = ibl * QK_K + 32 * ib + 8 * g
                    for kk in range(8):
                        v = sl * values[qi, kk]
                        if (data[r, o + 68 + 8 * g + kk] >> ib) & 1:
                            v = -v
                        out[r, y + kk] = v


# ------------------------------------------------------------------------------------------------------- IQ4_KT
IQ4_KT_BYTES = 128


@jit
def quantize_iq4_kt(starts1, points1, cvalues1, values1, starts2, points2, cvalues2, values2, x, imatrix, out):
    n, k = x.shape
    nbl = k // QK_K
    use_qw = imatrix.shape[0] > 0
    weights = np.empty(k, np.float32)
    scales = np.zeros(k // 32, np.float32)
    best_idx = np.zeros(16, np.int64)
    xr = np.empty(k, np.float32)
    flag = np.zeros(k // 32, np.int64)
    for r in range(n):
        for j in range(k):
            xr[j] = x[r, j]
        for b in range(out.shape[1]):
            out[r, b] = 0
        for b in range(k // 32):
            flag[b] = 0
        set_weights(F32(2.0), x, r, imatrix, use_qw, weights)
        amax_row = F32(0.0)
        for j in range(k):
            amax_row = std_max(amax_row, np.abs(xr[j]))
        if amax_row == F32(0.0):
            continue
        amax_scale = F32(0.0)
        max_scale = F32(0.0)
        for ib in range(k // 32):
            xo = 32 * ib
            amax = F32(0.0)
            for j in range(32):
                amax = std_max(amax, np.abs(xr[xo + j]))
            if amax < F32(1e-16):
                scales[ib] = F32(0.0)
                continue
            best = F32(0.0)
            scale_0 = std_max(F32(90.0), F32(124.0) * amax / amax_row)
            for itry in range(-2, 3):
                den = F32(8.0) * F32(itry) + scale_0
                find_best_match4(starts1, points1, cvalues1, amax / den, xr, xo, weights, xo, best_idx, 0)
                dp, score_p = find_best_scale(values1, 4, xr, xo, weights, xo, best_idx, 0)
                if score_p > best:
                    best = score_p
                    scales[ib] = dp
                find_best_match4(starts1, points1, cvalues1, -amax / den, xr, xo, weights, xo, best_idx, 0)
                dm, score_m = find_best_scale(values1, 4, xr, xo, weights, xo, best_idx, 0)
                if score_m > best:
                    best = score_m
                    scales[ib] = dm
            find_best_match4(starts2, points2, cvalues2, scales[ib], xr, xo, weights, xo, best_idx, 0)
            dd, score = find_best_scale(values2, 4, xr, xo, weights, xo, best_idx, 0)
            if score > best:
                scales[ib] = dd
                flag[ib] = 1
            with_offset = False
            for itry in range(-2, 3):
                den = F32(8.0) * F32(itry) + scale_0
                find_best_match4(starts2, points2, cvalues2, amax / den, xr, xo, weights, xo, best_idx, 0)
                dp, score_p = find_best_scale(values2, 4, xr, xo, weights, xo, best_idx, 0)
                if score_p > best:
                    best = score_p
                    scales[ib] = dp
                    with_offset = True
                find_best_match4(starts2, points2, cvalues2, -amax / den, xr, xo, weights, xo, best_idx, 0)
                dm, score_m = find_best_scale(values2, 4, xr, xo, weights, xo, best_idx, 0)
                if score_m > best:
                    best = score_m
                    scales[ib] = dm
                    with_offset = True
            if with_offset:
                flag[ib] = 1
            a = np.abs(scales[ib])
            if a > amax_scale:
                amax_scale = a
                max_scale = scales[ib]
        d = -max_scale / F32(64.0)
        put_f32(out, r, 0, d)
        if d == F32(0.0):
            for ib in range(k // 32):  # the offset flags were already written
                out[r, 4 + (ib // 8) * IQ4_KT_BYTES + 4 * (ib % 8)] = flag[ib]
            continue
        inv = F32(1.0) / d
        sumqx = F32(0.0)
        sumq2 = F32(0.0)
        for ibl in range(nbl):
            o = 4 + ibl * IQ4_KT_BYTES
            for ib in range(8):
                b = 8 * ibl + ib
                xo = 32 * b
                ls = nearest_int(inv * scales[b])
                ls = min(ls, 63)
                shb = (((ls + 64) << 1) | flag[b]) & 0xFF
                dl = d * F32(ls)
                if flag[b]:
                    find_best_match4(starts2, points2, cvalues2, dl, xr, xo, weights, xo, best_idx, 0)
                else:
                    find_best_match4(starts1, points1, cvalues1, dl, xr, xo, weights, xo, best_idx, 0)
                for j in range(8):
                    bi = best_idx[j]
                    shb |= (bi >> 12) << (8 + 3 * j)
                    jj = 8 * ib + j
                    out[r, o + 32 + jj] = bi & 255
                    out[r, o + 96 + jj % 32] |= ((bi >> 8) & 0xF) << (4 * (jj // 32))
                    for kk in range(4):
                        xi = xo + 4 * j + kk
                        qv = values2[bi, kk] if flag[b] else values1[bi, kk]
                        q = qv * F32(ls)
                        sumqx += weights[xi] * xr[xi] * q
                        sumq2 += weights[xi] * q * q
                for t in range(4):
                    out[r, o + 4 * ib + t] = (shb >> (8 * t)) & 0xFF
        if sumq2 > F32(0.0):
            put_f32(out, r, 0, sumqx / sumq2)


@jit
def dequantize_iq4_kt(values1, values2, data, n_per_row, out):
    for r in range(data.shape[0]):
        d = get_f32(data, r, 0)
        for ibl in range(n_per_row // QK_K):
            o = 4 + ibl * IQ4_KT_BYTES
            for ib in range(8):
                shb = (np.int64(data[r, o + 4 * ib]) | (np.int64(data[r, o + 4 * ib + 1]) << 8)
                       | (np.int64(data[r, o + 4 * ib + 2]) << 16) | (np.int64(data[r, o + 4 * ib + 3]) << 24))
                ls = ((shb & 0xFF) >> 1) - 64
                sl = d * F32(ls)
                for g in range(8):
                    jj = 8 * ib + g
                    idx = (np.int64(data[r, o + 32 + jj])
                           | ((np.int64(data[r, o + 96 + jj % 32]) << (8 - 4 * (jj // 32))) & 0xF00)
                           | (((shb >> (8 + 3 * g)) & 7) << 12))
                    y = ibl * QK_K + 32 * ib + 4 * g
                    for kk in range(4):
                        v = values2[idx, kk] if shb & 1 else values1[idx, kk]
                        out[r, y + kk] = sl * v


# ------------------------------------------------------------------------------------------------------- IQ1_KT
IQ1_KT_BYTES = 56


@jit
def quantize_iq1_kt(values, mid, starts, points, cvalues, x, imatrix, out):
    n, k = x.shape
    nbl = k // QK_K
    use_qw = imatrix.shape[0] > 0
    weights = np.empty(k, np.float32)
    scales = np.zeros(k // 32, np.float32)
    all_idx = np.zeros(k // 8, np.int64)
    best_idx = np.zeros(8, np.int64)
    xr = np.empty(k, np.float32)
    for r in range(n):
        for j in range(k):
            xr[j] = x[r, j]
        for b in range(out.shape[1]):
            out[r, b] = 0
        set_weights(F32(2.0), x, r, imatrix, use_qw, weights)
        amax_row = F32(0.0)
        for j in range(k):
            amax_row = std_max(amax_row, np.abs(xr[j]))
        amax_scale = F32(0.0)
        max_scale = F32(0.0)
        for ib in range(k // 32):
            xo = 32 * ib
            amax = F32(0.0)
            for j in range(32):
                amax = std_max(amax, np.abs(xr[xo + j]))
            if amax < F32(1e-16):
                scales[ib] = F32(0.0)
                for ig in range(4):
                    all_idx[xo // 8 + ig] = 0
                continue
            scale_0 = std_max(F32(90.0), F32(124.0) * amax / amax_row)
            find_best_match8(values, mid, starts, points, cvalues, amax / scale_0, xr, xo, weights, xo, best_idx, 0)
            dp, score_p = find_best_scale(values, 8, xr, xo, weights, xo, best_idx, 0)
            find_best_match8(values, mid, starts, points, cvalues, -amax / scale_0, xr, xo, weights, xo, best_idx, 4)
            dm, score_m = find_best_scale(values, 8, xr, xo, weights, xo, best_idx, 4)
            if score_p > score_m:
                scales[ib] = dp
                bo = 0
            else:
                scales[ib] = dm
                bo = 4
                score_p = score_m
            for ig in range(4):
                all_idx[xo // 8 + ig] = best_idx[bo + ig]
            scale_0 -= F32(8.0)
            find_best_match8(values, mid, starts, points, cvalues, amax / scale_0, xr, xo, weights, xo, best_idx, 0)
            dp1, score_p1 = find_best_scale(values, 8, xr, xo, weights, xo, best_idx, 0)
            find_best_match8(values, mid, starts, points, cvalues, -amax / scale_0, xr, xo, weights, xo, best_idx, 4)
            dm1, score_m1 = find_best_scale(values, 8, xr, xo, weights, xo, best_idx, 4)
            if score_p1 > score_p or score_m1 > score_p:
                if score_p1 > score_m1:
                    scales[ib] = dp1
                    bo = 0
                else:
                    scales[ib] = dm1
                    bo = 4
                for ig in range(4):
                    all_idx[xo // 8 + ig] = best_idx[bo + ig]
            a = np.abs(scales[ib])
            if a > amax_scale:
                amax_scale = a
                max_scale = scales[ib]
        if max_scale == F32(0.0):
            put_f32(out, r, 0, F32(0.0))
            continue
        d = max_scale / V4[0]
        best = F32(0.0)
        for itry in range(-9, 10):
            inv = (F32(itry) + V4[0]) / max_scale
            sumqx = F32(0.0)
            sumq2 = F32(0.0)
            for ib in range(k // 32):
                ls = bidx(tab4(), 0, inv * scales[ib])
                dl = V4[ls]
                for ig in range(4):
                    gi = all_idx[4 * ib + ig]
                    for j in range(8):
                        jj = 32 * ib + 8 * ig + j
                        q = dl * values[gi, j]
                        sumqx += weights[jj] * xr[jj] * q
                        sumq2 += weights[jj] * q * q
            if sumq2 > F32(0.0) and sumqx * sumqx > best * sumq2:
                d = sumqx / sumq2
                best = d * sumqx
        inv = F32(1.0) / d if d != F32(0.0) else F32(0.0)
        for ib in range(k // 32):
            out[r, 4 + (ib // 8) * 56 + ib % 8] = bidx(tab4(), 0, inv * scales[ib])
        put_f32(out, r, 0, d)
        if d == F32(0.0):
            continue
        sumqx = F32(0.0)
        sumq2 = F32(0.0)
        for ibl in range(nbl):
            o = 4 + ibl * 56
            for ib in range(8):
                xo = ibl * QK_K + 32 * ib
                ls = np.int64(V4[out[r, o + ib] & 0xF])
                dl = d * F32(ls)
                find_best_match8(values, mid, starts, points, cvalues, dl, xr, xo, weights, xo, best_idx, 0)
                mse1 = F32(0.0)
                mse2 = F32(0.0)
                for ig in range(4):
                    p1 = all_idx[xo // 8 + ig]
                    p2 = best_idx[ig]
                    for j in range(8):
                        jj = xo + 8 * ig + j
                        diff1 = xr[jj] - dl * values[p1, j]
                        diff2 = xr[jj] - dl * values[p2, j]
                        mse1 += weights[jj] * diff1 * diff1
                        mse2 += weights[jj] * diff2 * diff2
                if mse1 < mse2:
                    for ig in range(4):
                        best_idx[ig] = all_idx[xo // 8 + ig]
                else:
                    for ig in range(4):
                        all_idx[xo // 8 + ig] = best_idx[ig]
                for j in range(4):
                    bi = best_idx[j]
                    out[r, o + 8 + 4 * ib + j] = bi & 0xFF
                    out[r, o + 40 + (ib % 4) * 4 + j] |= ((bi >> 8) & 0xF) << (4 * (ib // 4))
                    out[r, o + ib] |= (bi >> 12) << (4 + j)
                    for kk in range(8):
                        jj = xo + 8 * j + kk
                        q = values[bi, kk] * F32(ls)
                        sumqx += weights[jj] * xr[jj] * q
                        sumq2 += weights[jj] * q * q
        if sumq2 > F32(0.0):
            put_f32(out, r, 0, sumqx / sumq2 * F32(1.07))


@jit
def dequantize_iq1_kt(values, data, n_per_row, out):
    for r in range(data.shape[0]):
        d = get_f32(data, r, 0)
        for ibl in range(n_per_row // QK_K):
            o = 4 + ibl * 56
            for ib in range(8):
                sh = np.int64(data[r, o + ib])
                sl = d * V4[sh & 0xF]
                for g in range(4):
                    idx = (np.int64(data[r, o + 8 + 4 * ib + g])
                           | ((np.int64(data[r, o + 40 + (ib % 4) * 4 + g]) << (8 - 4 * (ib // 4))) & 0xF00)
                           | ((sh << (8 - g)) & 0x1000))
                    y = ibl * QK_K + 32 * ib + 8 * g
                    for kk in range(8):
                        out[r, y + kk] = sl * values[idx, kk]
