"""numba kernels for the K-quants Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (super-blocks of 256, layouts in ggml-common.h).

Byte-exact with ggml's ``quantize_row_q*_K_ref`` (no imatrix) and ``quantize_row_q*_K_impl`` (imatrix); see
qf.kernels for the float32 rules.  Every type follows the same three steps per super-block: search a scale (and min)
per sub-block, quantize those against the fp16 super-block scale(s), then re-derive the quants from the *stored*
scales and pack.  The last two steps are shared with ``pack_*`` (generic strategies), which start from a solution's
sub-block scales instead of a search.  Arrays in, arrays out: ``x`` float32 ``(rows, n_per_row)``, ``out`` uint8
``(rows, row_bytes)``, imatrix float32 ``(n_per_row,)``.
"""

from __future__ import annotations

import numpy as np

from qf.kernels import F32, get_f16_at, jit, nearest_int, put_f16_at
from qf_plugins.quants._refine_kernels import NO_TABLE, refine_superblock
from qf_plugins.quants._search_kernels import (
    CANDIDATE_LANES,
    GROUP_LANES,
    GROUP_MAX_EPS,
    Q3_ROWS,
    QKX_ROWS,
    QX_ROWS,
    make_q3_quants_jit,
    make_qkx_quants_jit,
    make_qp_quants,
    make_qx_quants,
    q3_lanes,
    q3_result,
    qkx_lanes,
    qkx_result,
    qx_lanes,
    qx_result,
    sel,
)

QK_K = 256
# np.int64(c) instead of a literal c in calls of the lane searches: numba would compile one specialization per
# distinct literal argument, these all share one
I64 = np.int64
Q2_K_BYTES = 84
Q3_K_BYTES = 110
Q4_K_BYTES = 144
Q5_K_BYTES = 176
Q6_K_BYTES = 210


# ---------------------------------------------------------------------------------------------------------------------
# byte helpers


@jit
def _pack_2bit(out, o, L):
    """qs[64]: four 2-bit quants (their low two bits) per byte, element j + 32·s of each 128-half in bits 2s."""
    for j in range(0, QK_K, 128):
        for l in range(32):
            out[o + j // 4 + l] = ((L[j + l] & 3) | ((L[j + l + 32] & 3) << 2) | ((L[j + l + 64] & 3) << 4)
                                   | ((L[j + l + 96] & 3) << 6))


@jit
def _requant(x, xo, L, T, lo, hi, off, Q):
    """The final quants of a super-block from its stored scales: ``Q[i] = clamp(nearest_int((x[xo+i] + T[256+i]) /
    T[i]), lo, hi) + off`` (``T`` holds each element's sub-block scale and min; min 0 for ``x / d``: x + 0 is x, and
    ±0 rounds to 0 either way); where the scale is 0 ggml keeps the search's quant ``L[i]``.  One vectorizable
    loop with ggml's integer nearest_int (exact for every input)."""
    for i in range(QK_K):
        d = T[i]
        q = max(lo, min(hi, nearest_int((x[xo + i] + T[QK_K + i]) / d))) + off
        Q[i] = sel(d == F32(0.0), L[i], q)


@jit
def _sigma2_block(x, xo, factor):
    s = F32(0.0)
    for j in range(QK_K):
        s += x[xo + j] * x[xo + j]
    return factor * s / F32(QK_K)


# 6-bit scale/min packing of Q4_K and Q5_K (get_scale_min_k4)


@jit
def _put_scale_min_k4(out, o, Ls, Lm):
    """scales[12] from 8 scales and 8 mins (values as C's uint8_t, truncated on store as C does)."""
    for j in range(8):
        ls = Ls[j]
        lm = Lm[j]
        if j < 4:
            out[o + j] = ls & 0xFF
            out[o + j + 4] = lm & 0xFF
        else:
            out[o + j + 4] = ((ls & 0xF) | ((lm & 0xF) << 4)) & 0xFF
            out[o + j - 4] = (out[o + j - 4] | ((ls >> 4) << 6)) & 0xFF
            out[o + j] = (out[o + j] | ((lm >> 4) << 6)) & 0xFF


@jit
def _get_scale_min_k4(j, q, o):
    if j < 4:
        return np.int32(q[o + j] & 63), np.int32(q[o + j + 4] & 63)
    sc = (q[o + j + 4] & 0xF) | ((q[o + j - 4] >> 6) << 4)
    m = (q[o + j + 4] >> 4) | ((q[o + j] >> 6) << 4)
    return np.int32(sc), np.int32(m)


# batches: ``GROUP_LANES`` sub-blocks (lanes) at a time, over the super-blocks of all rows in order (ggml's _ref
# treats the # whole chunk as one row; the _impl paths only need the position in the row for the imatrix)


@jit
def _to_lanes(src, so, n, nsub, lane0, XT):
    """Sub-block ``j`` of ``src[so:so + n·nsub]`` (``n`` values each) into lane ``lane0 + j`` of ``XT``."""
    for j in range(nsub):
        for i in range(n):
            XT[i * GROUP_LANES + lane0 + j] = src[so + j * n + i]


@jit
def _from_lanes(LT, n, nsub, lane0, L):
    for j in range(nsub):
        for i in range(n):
            L[j * n + i] = np.int32(LT[i * GROUP_LANES + lane0 + j])


# ---------------------------------------------------------------------------------------------------------------------
# Q2_K: scales[16] (lo4 scale, hi4 min), qs[64], d, dmin  — x ≈ d·sc·q − dmin·m, q in [0, 3]


@jit
def _q2k_finish(x, xo, L, out, o, T, Q):
    """Requantize from the stored scales (keeping the search's L where the scale is 0) and pack qs."""
    d_all = get_f16_at(out, o + 80)
    m_all = get_f16_at(out, o + 82)
    for j in range(16):
        sc = np.int32(out[o + j])
        d = d_all * F32(sc & 0xF)
        dm = m_all * F32(sc >> 4)
        for i in range(16):
            T[16 * j + i] = d
            T[QK_K + 16 * j + i] = dm
    _requant(x, xo, L, T, I64(0), I64(3), I64(0), Q)
    _pack_2bit(out, o + 16, Q)


@jit
def _q2k_scales_ref(scales, mins, out, o):
    """quantize_row_q2_K_ref's 4-bit scales and mins: the largest maps to 15."""
    max_scale = F32(0.0)
    max_min = F32(0.0)
    for j in range(16):
        if scales[j] > max_scale:
            max_scale = scales[j]
        if mins[j] > max_min:
            max_min = mins[j]
    if max_scale > F32(0.0):
        iscale = F32(15.0) / max_scale
        for j in range(16):
            out[o + j] = nearest_int(iscale * scales[j]) & 0xFF
        put_f16_at(out, o + 80, max_scale / F32(15.0))
    else:
        for j in range(16):
            out[o + j] = 0
        put_f16_at(out, o + 80, F32(0.0))
    if max_min > F32(0.0):
        iscale = F32(15.0) / max_min
        for j in range(16):
            out[o + j] = (out[o + j] | (nearest_int(iscale * mins[j]) << 4)) & 0xFF
        put_f16_at(out, o + 82, max_min / F32(15.0))
    else:
        put_f16_at(out, o + 82, F32(0.0))


@jit
def _q2k_kernel(x, qw, out):
    rows, k = x.shape
    nb = k // QK_K
    total = rows * nb
    B = GROUP_LANES // 16
    XT = np.empty(16 * GROUP_LANES, np.float32)
    WT = np.empty(16 * GROUP_LANES, np.float32)
    LT = np.empty(16 * GROUP_LANES, np.float32)
    V = np.empty(QKX_ROWS * GROUP_LANES, np.float32)
    W = np.empty(B * QK_K, np.float32)
    SW = np.empty(B * 16, np.float32)
    L = np.empty(QK_K, np.int32)
    T = np.empty(2 * QK_K, np.float32)
    Q = np.empty(QK_K, np.int32)
    Laux = np.empty(16, np.int32)
    scales = np.empty(16, np.float32)
    mins = np.empty(16, np.float32)
    Ls = np.empty(16, np.int32)
    Lm = np.empty(16, np.int32)
    for g0 in range(0, total, B):
        nbb = min(B, total - g0)
        for bb in range(nbb):
            r = (g0 + bb) // nb
            xo = (g0 + bb) % nb * QK_K
            xr = x[r]
            if qw is None:
                for i in range(QK_K):
                    W[bb * QK_K + i] = abs(xr[xo + i])
            else:
                sigma2 = _sigma2_block(xr, xo, F32(1.0))
                for j in range(16):
                    s = F32(0.0)
                    for i in range(16):
                        xi = xr[xo + 16 * j + i]
                        w = qw[xo + 16 * j + i] * np.sqrt(sigma2 + xi * xi)
                        W[bb * QK_K + 16 * j + i] = w
                        s += w
                    SW[bb * 16 + j] = s
            _to_lanes(xr, xo, 16, 16, bb * 16, XT)
            _to_lanes(W, bb * QK_K, 16, 16, bb * 16, WT)
        if qw is None:
            qkx_lanes(nbb * 16, I64(16), I64(3), XT, WT, F32(-0.5), F32(0.1), I64(15), np.bool_(True), V, LT)
        else:
            qkx_lanes(nbb * 16, I64(16), I64(3), XT, WT, F32(-0.9), F32(0.05), I64(36), np.bool_(False), V, LT)
        for bb in range(nbb):
            r = (g0 + bb) // nb
            ib = (g0 + bb) % nb
            xo = ib * QK_K
            xr = x[r]
            orow = out[r]
            o = ib * Q2_K_BYTES
            _from_lanes(LT, 16, 16, bb * 16, L)
            for j in range(16):
                lane = bb * 16 + j
                found = qkx_result(V, lane)
                if found.bad:
                    if qw is None:
                        s, m = make_qkx_quants_jit(I64(16), I64(3), xr, xo + 16 * j, W, bb * QK_K + 16 * j, L,
                                                   16 * j, Laux, F32(-0.5), F32(0.1), I64(15), np.bool_(True))
                    else:
                        s, m = make_qkx_quants_jit(I64(16), I64(3), xr, xo + 16 * j, W, bb * QK_K + 16 * j, L,
                                                   16 * j, Laux, F32(-0.9), F32(0.05), I64(36), np.bool_(False))
                    scales[j] = s
                    mins[j] = m
                else:
                    scales[j] = found.scale
                    mins[j] = -found.min
            if qw is None:
                _q2k_scales_ref(scales, mins, orow, o)
            else:
                dm = make_qp_quants(I64(16), I64(15), scales, Ls, SW[bb * 16:bb * 16 + 16])
                mm = make_qp_quants(I64(16), I64(15), mins, Lm, SW[bb * 16:bb * 16 + 16])
                put_f16_at(orow, o + 80, dm)
                put_f16_at(orow, o + 82, mm)
                for j in range(16):
                    orow[o + j] = (Ls[j] | (Lm[j] << 4)) & 0xFF
            _q2k_finish(xr, xo, L, orow, o, T, Q)


@jit
def quantize_q2_k(x, out):
    _q2k_kernel(x, None, out)


@jit
def quantize_q2_k_imatrix(x, qw, out):
    _q2k_kernel(x, qw, out)


# ---------------------------------------------------------------------------------------------------------------------
# Q3_K: hmask[32], qs[64], scales[12] (16 × 6-bit, offset 32), d  — x ≈ d·sc·q, q in [-4, 3]


@jit
def _q3k_put_scales(out, o, Ls):
    """scales[12] from 16 values in [0, 63] (low nibbles in bytes 0-7, two high bits each in bytes 8-11)."""
    for j in range(12):
        out[o + j] = 0
    for j in range(16):
        l = Ls[j]
        if j < 8:
            out[o + j] = l & 0xF
        else:
            out[o + j - 8] = (out[o + j - 8] | ((l & 0xF) << 4)) & 0xFF
        l >>= 4
        out[o + 8 + j % 4] = (out[o + 8 + j % 4] | (l << (2 * (j // 4)))) & 0xFF


@jit
def _q3k_get_scale(q, o, j):
    sc = np.int32(q[o + j] & 0xF) if j < 8 else np.int32(q[o + j - 8] >> 4)
    return (sc | (((np.int32(q[o + 8 + j % 4]) >> (2 * (j // 4))) & 3) << 4)) - 32


@jit
def _q3k_finish(x, xo, L, out, o, T, Q):
    d_all = get_f16_at(out, o + 108)
    for j in range(16):
        d = d_all * F32(_q3k_get_scale(out, o + 96, j))
        for i in range(16):
            T[16 * j + i] = d
            T[QK_K + 16 * j + i] = F32(0.0)
    _requant(x, xo, L, T, I64(-4), I64(3), I64(4), Q)
    # hmask: bit b of byte m is the high bit (4) of quant 32·b + m; qs gets the low two bits
    for m in range(32):
        h = 0
        for b in range(8):
            h |= ((Q[32 * b + m] >> 2) & 1) << b
        out[o + m] = h
    _pack_2bit(out, o + 32, Q)


@jit
def _q3k_scales_ref(scales, Ls, out, o):
    """quantize_row_q3_K_ref's 6-bit scales: the largest magnitude maps to -32."""
    max_scale = F32(0.0)
    amax = F32(0.0)
    for j in range(16):
        a = abs(scales[j])
        if a > amax:
            amax = a
            max_scale = scales[j]
    if max_scale != F32(0.0):
        iscale = F32(-32.0) / max_scale
        for j in range(16):
            l = nearest_int(iscale * scales[j])
            l = ((l + 128) & 0xFF) - 128  # int8_t
            Ls[j] = max(-32, min(31, l)) + 32
        _q3k_put_scales(out, o + 96, Ls)
        put_f16_at(out, o + 108, F32(1.0) / iscale)
    else:
        for j in range(12):
            out[o + 96 + j] = 0
        put_f16_at(out, o + 108, F32(0.0))


@jit
def _q3k_kernel(x, qw, out):
    rows, k = x.shape
    nb = k // QK_K
    total = rows * nb
    B = GROUP_LANES // 16
    XT = np.empty(16 * GROUP_LANES, np.float32)
    WT = np.empty(16 * GROUP_LANES, np.float32)
    LT = np.empty(16 * GROUP_LANES, np.float32)
    V = np.empty(max(Q3_ROWS, QX_ROWS) * GROUP_LANES, np.float32)
    W = np.empty(B * QK_K, np.float32)
    SW = np.empty(B * 16, np.float32)
    S = np.empty(3 * CANDIDATE_LANES, np.float32)
    L = np.empty(QK_K, np.int32)
    T = np.empty(2 * QK_K, np.float32)
    Q = np.empty(QK_K, np.int32)
    Ls = np.empty(16, np.int32)
    scales = np.empty(16, np.float32)
    for g0 in range(0, total, B):
        nbb = min(B, total - g0)
        for bb in range(nbb):
            r = (g0 + bb) // nb
            xo = (g0 + bb) % nb * QK_K
            xr = x[r]
            _to_lanes(xr, xo, 16, 16, bb * 16, XT)
            if qw is not None:
                sigma2 = _sigma2_block(xr, xo, F32(2.0))
                for j in range(16):
                    s = F32(0.0)
                    for i in range(16):
                        xi = xr[xo + 16 * j + i]
                        w = qw[xo + 16 * j + i] * np.sqrt(sigma2 + xi * xi)
                        W[bb * QK_K + 16 * j + i] = w
                        s += w
                    SW[bb * 16 + j] = s
                _to_lanes(W, bb * QK_K, 16, 16, bb * 16, WT)
        if qw is None:
            q3_lanes(nbb * 16, I64(16), I64(4), XT, V, LT)
        else:
            qx_lanes(nbb * 16, I64(16), I64(4), XT, WT, V, LT)
        for bb in range(nbb):
            r = (g0 + bb) // nb
            ib = (g0 + bb) % nb
            xo = ib * QK_K
            xr = x[r]
            orow = out[r]
            o = ib * Q3_K_BYTES
            _from_lanes(LT, 16, 16, bb * 16, L)
            if qw is None:
                for j in range(16):
                    lane = bb * 16 + j
                    found = q3_result(V, lane)
                    if found.bad:
                        scales[j] = make_q3_quants_jit(I64(16), I64(4), xr, xo + 16 * j, L, 16 * j)
                    else:
                        scales[j] = found.scale
                _q3k_scales_ref(scales, Ls, orow, o)
            else:
                for j in range(16):
                    scales[j] = qx_result(V, bb * 16 + j).scale
                d_block = make_qx_quants(I64(16), I64(32), scales, I64(0), Ls, I64(0), SW, bb * 16, S)
                _q3k_put_scales(orow, o + 96, Ls)
                put_f16_at(orow, o + 108, d_block)
            _q3k_finish(xr, xo, L, orow, o, T, Q)


@jit
def quantize_q3_k(x, out):
    _q3k_kernel(x, None, out)


@jit
def quantize_q3_k_imatrix(x, qw, out):
    _q3k_kernel(x, qw, out)


# ---------------------------------------------------------------------------------------------------------------------
# Q4_K / Q5_K: d, dmin, scales[12] (8 scales + 8 mins, 6-bit), (qh[32]), qs[128]  — x ≈ d·sc·q − dmin·m


@jit
def _q45k_finish(x, xo, L, out, o, nmax, T, Q):
    d_all = get_f16_at(out, o)
    m_all = get_f16_at(out, o + 2)
    for j in range(8):
        sc, m = _get_scale_min_k4(j, out, o + 4)
        d = d_all * F32(sc)
        dm = m_all * F32(m)
        for i in range(32):
            T[32 * j + i] = d
            T[QK_K + 32 * j + i] = dm
    _requant(x, xo, L, T, I64(0), I64(nmax), I64(0), Q)
    L = Q
    if nmax == 15:
        q = o + 16
        for j in range(0, QK_K, 64):
            for l in range(32):
                out[q + l] = L[j + l] | (L[j + l + 32] << 4)
            q += 32
    else:
        # qh: bit 2s (2s+1) of byte j is the high bit of quant 64·s + j (64·s + 32 + j); qs as for Q4_K
        qh = o + 16
        ql = o + 48
        for j in range(32):
            out[qh + j] = 0
        for s in range(4):
            for j in range(32):
                l1 = L[64 * s + j]
                l2 = L[64 * s + j + 32]
                out[ql + 32 * s + j] = (l1 & 15) | ((l2 & 15) << 4)
                out[qh + j] |= ((l1 >> 4) << (2 * s)) | ((l2 >> 4) << (2 * s + 1))


@jit
def _q45k_scales_ref(scales, mins, Ls, Lm, out, o):
    """quantize_row_q4_K_ref / q5_K_ref: 6-bit scales and mins, the largest maps to 63."""
    max_scale = F32(0.0)
    max_min = F32(0.0)
    for j in range(8):
        if scales[j] > max_scale:
            max_scale = scales[j]
        if mins[j] > max_min:
            max_min = mins[j]
    inv_scale = F32(63.0) / max_scale if max_scale > F32(0.0) else F32(0.0)
    inv_min = F32(63.0) / max_min if max_min > F32(0.0) else F32(0.0)
    for j in range(8):
        Ls[j] = min(63, nearest_int(inv_scale * scales[j]) & 0xFF)
        Lm[j] = min(63, nearest_int(inv_min * mins[j]) & 0xFF)
    _put_scale_min_k4(out, o + 4, Ls, Lm)
    put_f16_at(out, o, max_scale / F32(63.0))
    put_f16_at(out, o + 2, max_min / F32(63.0))


@jit
def _q45k_kernel(x, qw, out, nbits):
    rows, k = x.shape
    nb = k // QK_K
    total = rows * nb
    B = GROUP_LANES // 8
    nmax = 15 if nbits == 4 else 31
    bsize = Q4_K_BYTES if nbits == 4 else Q5_K_BYTES
    # the ref searches: Q4_K rmin -1, 21 steps; Q5_K rmin -0.5, 16 steps; the imatrix searches: -0.9, 37 steps
    rmin = F32(-1.0) if nbits == 4 else F32(-0.5)
    nstep = 20 if nbits == 4 else 15
    XT = np.empty(32 * GROUP_LANES, np.float32)
    WT = np.empty(32 * GROUP_LANES, np.float32)
    LT = np.empty(32 * GROUP_LANES, np.float32)
    V = np.empty(QKX_ROWS * GROUP_LANES, np.float32)
    W = np.empty(B * QK_K, np.float32)
    SW = np.empty(B * 8, np.float32)
    L = np.empty(QK_K, np.int32)
    T = np.empty(2 * QK_K, np.float32)
    Q = np.empty(QK_K, np.int32)
    Laux = np.empty(32, np.int32)
    scales = np.empty(8, np.float32)
    mins = np.empty(8, np.float32)
    Ls = np.empty(8, np.int32)
    Lm = np.empty(8, np.int32)
    for g0 in range(0, total, B):
        nbb = min(B, total - g0)
        for bb in range(nbb):
            r = (g0 + bb) // nb
            xo = (g0 + bb) % nb * QK_K
            xr = x[r]
            if qw is None:
                for j in range(8):
                    b = xo + 32 * j
                    sum_x2 = F32(0.0)
                    for i in range(32):
                        sum_x2 += xr[b + i] * xr[b + i]
                    av_x = np.sqrt(sum_x2 / F32(32.0))
                    for i in range(32):
                        W[bb * QK_K + 32 * j + i] = av_x + abs(xr[b + i])
            else:
                sigma2 = _sigma2_block(xr, xo, F32(2.0))
                for j in range(8):
                    s = F32(0.0)
                    for i in range(32):
                        xi = xr[xo + 32 * j + i]
                        w = qw[xo + 32 * j + i] * np.sqrt(sigma2 + xi * xi)
                        W[bb * QK_K + 32 * j + i] = w
                        s += w
                    SW[bb * 8 + j] = s
            _to_lanes(xr, xo, 32, 8, bb * 8, XT)
            _to_lanes(W, bb * QK_K, 32, 8, bb * 8, WT)
        if qw is None:
            qkx_lanes(nbb * 8, I64(32), I64(nmax), XT, WT, rmin, F32(0.1), I64(nstep), np.bool_(False), V, LT)
        else:
            qkx_lanes(nbb * 8, I64(32), I64(nmax), XT, WT, F32(-0.9), F32(0.05), I64(36), np.bool_(False), V, LT)
        for bb in range(nbb):
            r = (g0 + bb) // nb
            ib = (g0 + bb) % nb
            xo = ib * QK_K
            xr = x[r]
            orow = out[r]
            o = ib * bsize
            _from_lanes(LT, 32, 8, bb * 8, L)
            for j in range(8):
                lane = bb * 8 + j
                found = qkx_result(V, lane)
                if found.bad:
                    if qw is None:
                        s, m = make_qkx_quants_jit(I64(32), I64(nmax), xr, xo + 32 * j, W, bb * QK_K + 32 * j, L,
                                                   32 * j, Laux, rmin, F32(0.1), I64(nstep), np.bool_(False))
                    else:
                        s, m = make_qkx_quants_jit(I64(32), I64(nmax), xr, xo + 32 * j, W, bb * QK_K + 32 * j, L,
                                                   32 * j, Laux, F32(-0.9), F32(0.05), I64(36), np.bool_(False))
                    scales[j] = s
                    mins[j] = m
                else:
                    scales[j] = found.scale
                    mins[j] = -found.min
            if qw is None:
                _q45k_scales_ref(scales, mins, Ls, Lm, orow, o)
            else:
                d_block = make_qp_quants(I64(8), I64(63), scales, Ls, SW[bb * 8:bb * 8 + 8])
                m_block = make_qp_quants(I64(8), I64(63), mins, Lm, SW[bb * 8:bb * 8 + 8])
                if nbits == 5:  # quantize_row_q5_K_impl clamps to 63, q4_K_impl does not
                    for j in range(8):
                        Ls[j] = min(63, Ls[j])
                        Lm[j] = min(63, Lm[j])
                _put_scale_min_k4(orow, o + 4, Ls, Lm)
                put_f16_at(orow, o, d_block)
                put_f16_at(orow, o + 2, m_block)
            _q45k_finish(xr, xo, L, orow, o, nmax, T, Q)


@jit
def quantize_q4_k(x, out):
    _q45k_kernel(x, None, out, 4)


@jit
def quantize_q5_k(x, out):
    _q45k_kernel(x, None, out, 5)


@jit
def quantize_q4_k_imatrix(x, qw, out):
    _q45k_kernel(x, qw, out, 4)


@jit
def quantize_q5_k_imatrix(x, qw, out):
    _q45k_kernel(x, qw, out, 5)


# ---------------------------------------------------------------------------------------------------------------------
# Q6_K: ql[128], qh[64], scales i8[16], d  — x ≈ d·sc·q, q in [-32, 31]


@jit
def _q6k_finish(x, xo, L, out, o, T, Q):
    """From stored d and int8 scales: requantize, then pack ql/qh."""
    d_all = get_f16_at(out, o + 208)
    for j in range(16):
        sc = np.int32(out[o + 192 + j])
        if sc >= 128:
            sc -= 256
        d = d_all * F32(sc)
        for i in range(16):
            T[16 * j + i] = d
            T[QK_K + 16 * j + i] = F32(0.0)
    _requant(x, xo, L, T, I64(-32), I64(31), I64(32), Q)
    L = Q
    for j in range(0, QK_K, 128):
        ql = o + j // 2
        qh = o + 128 + j // 4
        for l in range(32):
            q1 = L[j + l] & 0xF
            q2 = L[j + l + 32] & 0xF
            q3 = L[j + l + 64] & 0xF
            q4 = L[j + l + 96] & 0xF
            out[ql + l] = q1 | (q3 << 4)
            out[ql + l + 32] = q2 | (q4 << 4)
            out[qh + l] = ((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4)
                           | ((L[j + l + 96] >> 4) << 6))


@jit
def _q6k_scales(scales, out, o):
    """int8 scales, the largest magnitude maps to -128; returns False (block all zero) below GROUP_MAX_EPS."""
    max_scale = F32(0.0)
    max_abs = F32(0.0)
    for ib in range(16):
        a = abs(scales[ib])
        if a > max_abs:
            max_abs = a
            max_scale = scales[ib]
    if max_abs < GROUP_MAX_EPS:
        for j in range(Q6_K_BYTES):
            out[o + j] = 0
        return False
    iscale = F32(-128.0) / max_scale
    put_f16_at(out, o + 208, F32(1.0) / iscale)
    for ib in range(16):
        out[o + 192 + ib] = min(127, nearest_int(iscale * scales[ib])) & 0xFF
    return True


@jit
def _q6k_kernel(x, qw, out):
    rows, k = x.shape
    nb = k // QK_K
    total = rows * nb
    B = GROUP_LANES // 16
    XT = np.empty(16 * GROUP_LANES, np.float32)
    WT = np.empty(16 * GROUP_LANES, np.float32)
    LT = np.empty(16 * GROUP_LANES, np.float32)
    V = np.empty(QX_ROWS * GROUP_LANES, np.float32)
    L = np.empty(QK_K, np.int32)
    T = np.empty(2 * QK_K, np.float32)
    Q = np.empty(QK_K, np.int32)
    scales = np.empty(16, np.float32)
    for g0 in range(0, total, B):
        nbb = min(B, total - g0)
        for bb in range(nbb):
            r = (g0 + bb) // nb
            xo = (g0 + bb) % nb * QK_K
            xr = x[r]
            _to_lanes(xr, xo, 16, 16, bb * 16, XT)
            if qw is None:
                for j in range(16):
                    for i in range(16):
                        xi = XT[i * GROUP_LANES + bb * 16 + j]
                        WT[i * GROUP_LANES + bb * 16 + j] = xi * xi
            else:
                _to_lanes(qw, xo, 16, 16, bb * 16, WT)
        qx_lanes(nbb * 16, I64(16), I64(32), XT, WT, V, LT)
        for bb in range(nbb):
            r = (g0 + bb) // nb
            ib = (g0 + bb) % nb
            orow = out[r]
            o = ib * Q6_K_BYTES
            _from_lanes(LT, 16, 16, bb * 16, L)
            for j in range(16):
                scales[j] = qx_result(V, bb * 16 + j).scale
            if _q6k_scales(scales, orow, o):
                _q6k_finish(x[r], ib * QK_K, L, orow, o, T, Q)


@jit
def quantize_q6_k(x, out):
    _q6k_kernel(x, None, out)


@jit
def quantize_q6_k_imatrix(x, qw, out):
    _q6k_kernel(x, qw, out)


# ---------------------------------------------------------------------------------------------------------------------
# packing of generic solutions: sub-block scales (and offsets) -> the type's scale quantization -> requantize


@jit
def _solution_L(q, r, base, qmin, qmax, L):
    for i in range(QK_K):
        L[i] = max(qmin, min(qmax, q[r, base + i])) - qmin


@jit
def _asym_scale_min(d, m, qmax):
    """A solution's x ≈ d·q + m as the K-quant form x ≈ s·q − mn with s, mn >= 0.  K-quants cannot add an offset
    (mn >= 0): for m > 0 the sub-block gets s covering [0, m + d·qmax] instead."""
    d = max(d, F32(0.0))
    if m <= F32(0.0):
        return d, -m
    return (m + d * F32(qmax)) / F32(qmax), F32(0.0)


#: coordinate-descent rounds of the stored-scale refinement (qf_plugins.quants._refine_kernels)
REFINE_ITERS = 3


@jit
def _solution_scales(d, m, r, j0, nsub, qmax, ds, ms):
    """A solution's sub-block scales (and, with ``m``, K-quant mins: x ≈ s·q − mn, s, mn >= 0) as float64."""
    for j in range(nsub):
        if m.shape[1] == 0:
            ds[j] = d[r, j0 + j]
            ms[j] = 0.0
        else:
            s_, mn_ = _asym_scale_min(d[r, j0 + j], m[r, j0 + j], qmax)
            ds[j] = s_
            ms[j] = mn_


@jit
def _pack_k(x, w, d, m, q, out, kind):
    """Generic-solution packing of every K-quant (kind = 2..6 for Q2_K..Q6_K): stored scales chosen by
    refine_superblock, then ggml's own requantization from the stored scales and packing."""
    n, k = x.shape
    if kind == 2:
        nsub, sub, lo, hi, has_min, qlo, qhi, bsize = 16, 16, 0, 15, True, 0, 3, Q2_K_BYTES
    elif kind == 3:
        nsub, sub, lo, hi, has_min, qlo, qhi, bsize = 16, 16, -32, 31, False, -4, 3, Q3_K_BYTES
    elif kind == 4:
        nsub, sub, lo, hi, has_min, qlo, qhi, bsize = 8, 32, 0, 63, True, 0, 15, Q4_K_BYTES
    elif kind == 5:
        nsub, sub, lo, hi, has_min, qlo, qhi, bsize = 8, 32, 0, 63, True, 0, 31, Q5_K_BYTES
    else:
        nsub, sub, lo, hi, has_min, qlo, qhi, bsize = 16, 16, -128, 127, False, -32, 31, Q6_K_BYTES
    L = np.empty(QK_K, np.int32)
    T = np.empty(2 * QK_K, np.float32)
    Q = np.empty(QK_K, np.int32)
    qs = np.empty(QK_K, np.int64)
    ds = np.empty(nsub)
    ms = np.empty(nsub)
    sc = np.empty(nsub, np.int64)
    mn = np.empty(nsub, np.int64)
    for r in range(n):
        row = out[r]
        for ib in range(k // QK_K):
            o = ib * bsize
            xo = ib * QK_K
            _solution_scales(d, m, r, ib * nsub, nsub, qhi, ds, ms)
            _solution_L(q, r, xo, qlo, qhi, L)
            D, Dm = refine_superblock(x[r, xo:xo + QK_K], w[r, xo:xo + QK_K], sub, ds, ms, sc, lo, hi, mn, 0, hi,
                                      has_min, qlo, qhi, NO_TABLE, qs, REFINE_ITERS)
            if kind == 2:
                for j in range(16):
                    row[o + j] = sc[j] | (mn[j] << 4)
                put_f16_at(row, o + 80, F32(D))
                put_f16_at(row, o + 82, F32(Dm))
                _q2k_finish(x[r], xo, L, row, o, T, Q)
            elif kind == 3:
                for j in range(16):
                    sc[j] += 32
                _q3k_put_scales(row, o + 96, sc)
                put_f16_at(row, o + 108, F32(D))
                _q3k_finish(x[r], xo, L, row, o, T, Q)
            elif kind == 6:
                for j in range(16):
                    row[o + 192 + j] = sc[j] & 0xFF
                put_f16_at(row, o + 208, F32(D))
                _q6k_finish(x[r], xo, L, row, o, T, Q)
            else:
                _put_scale_min_k4(row, o + 4, sc, mn)
                put_f16_at(row, o, F32(D))
                put_f16_at(row, o + 2, F32(Dm))
                _q45k_finish(x[r], xo, L, row, o, qhi, T, Q)


_NO_MIN = np.empty((0, 0), np.float32)


def pack_q2_k(x, w, d, m, q, out):
    _pack_k(x, w, d, m, q, out, 2)


def pack_q3_k(x, w, d, q, out):
    _pack_k(x, w, d, _NO_MIN, q, out, 3)


def pack_q4_k(x, w, d, m, q, out):
    _pack_k(x, w, d, m, q, out, 4)


def pack_q5_k(x, w, d, m, q, out):
    _pack_k(x, w, d, m, q, out, 5)


def pack_q6_k(x, w, d, q, out):
    _pack_k(x, w, d, _NO_MIN, q, out, 6)


# ---------------------------------------------------------------------------------------------------------------------
# dequantization (ggml's dequantize_row_q*_K; same float32 operation order as gguf-py)


@jit
def dequantize_q2_k(data, k, out):
    for r in range(data.shape[0]):
        row = data[r]
        for ib in range(k // QK_K):
            o = ib * Q2_K_BYTES
            d = get_f16_at(row, o + 80)
            mn = get_f16_at(row, o + 82)
            y = ib * QK_K
            for s in range(16):
                sc = np.int32(row[o + s])
                dl = d * F32(sc & 0xF)
                ml = mn * F32(sc >> 4)
                half = s // 8
                shift = 2 * ((s % 8) // 2)
                q0 = o + 16 + 32 * half + 16 * (s % 2)
                for l in range(16):
                    q = (np.int32(row[q0 + l]) >> shift) & 3
                    out[r, y + 16 * s + l] = dl * F32(q) - ml


@jit
def dequantize_q3_k(data, k, out):
    for r in range(data.shape[0]):
        row = data[r]
        for ib in range(k // QK_K):
            o = ib * Q3_K_BYTES
            d_all = get_f16_at(row, o + 108)
            y = ib * QK_K
            for s in range(16):
                dl = d_all * F32(_q3k_get_scale(row, o + 96, s))
                half = s // 8
                shift = 2 * ((s % 8) // 2)
                bit = 4 * half + (s % 8) // 2
                q0 = o + 32 + 32 * half + 16 * (s % 2)
                h0 = o + 16 * (s % 2)
                for l in range(16):
                    q = (np.int32(row[q0 + l]) >> shift) & 3
                    if (row[h0 + l] >> bit) & 1 == 0:
                        q -= 4
                    out[r, y + 16 * s + l] = dl * F32(q)


@jit
def dequantize_q45_k(data, k, nbits, out):
    bsize = Q4_K_BYTES if nbits == 4 else Q5_K_BYTES
    qs = 16 if nbits == 4 else 48
    for r in range(data.shape[0]):
        row = data[r]
        for ib in range(k // QK_K):
            o = ib * bsize
            d = get_f16_at(row, o)
            mn = get_f16_at(row, o + 2)
            y = ib * QK_K
            for s in range(8):
                sc, m = _get_scale_min_k4(s, row, o + 4)
                d1 = d * F32(sc)
                m1 = mn * F32(m)
                q0 = o + qs + 32 * (s // 2)
                shift = 4 * (s % 2)
                for l in range(32):
                    q = (np.int32(row[q0 + l]) >> shift) & 0xF
                    if nbits == 5 and (row[o + 16 + l] >> s) & 1:
                        q += 16
                    out[r, y + 32 * s + l] = d1 * F32(q) - m1


@jit
def dequantize_q6_k(data, k, out):
    for r in range(data.shape[0]):
        row = data[r]
        for ib in range(k // QK_K):
            o = ib * Q6_K_BYTES
            d = get_f16_at(row, o + 208)
            y = ib * QK_K
            for s in range(16):
                sc = np.int32(row[o + 192 + s])
                if sc >= 128:
                    sc -= 256
                dl = d * F32(sc)
                half = s // 8
                quarter = (s % 8) // 2  # which of the four 32-runs of this 128-half
                ql0 = o + 64 * half + 32 * (quarter % 2) + 16 * (s % 2)
                qshift = 4 * (quarter // 2)
                qh0 = o + 128 + 32 * half + 16 * (s % 2)
                hshift = 2 * quarter
                for l in range(16):
                    q = ((np.int32(row[ql0 + l]) >> qshift) & 0xF) | (((np.int32(row[qh0 + l]) >> hshift) & 3) << 4)
                    out[r, y + 16 * s + l] = dl * F32(q - 32)
