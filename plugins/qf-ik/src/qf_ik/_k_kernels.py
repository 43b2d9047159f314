"""numba kernels for ik_llama.cpp's K family (IQ2_K, IQ3_K, IQ4_K, IQ5_K, IQ6_K) and Q6_0.

Byte-exact with ik's ``quantize_iq{2..6}_k`` (iqk_quantize.cpp) and ``quantize_q6_0`` (ggml-quants.c): every
super-block of 256 holds 16 blocks of 16, each fitted against a non-linear table or its shifted twin (the ``extra``
bit), then the block scales are quantized against a fp16 super-block scale.  With an imatrix, the rows' weights first
go through ik's ``QHelper::row_weights`` (blocks of 16 whose sums are tiny get 1e-9).  ``x`` is float32
``(rows, n_per_row)``, ``imatrix`` float32 ``(n_per_row,)`` or empty, ``out`` uint8 ``(rows, row_bytes)``.
"""

from __future__ import annotations

import numpy as np
from qf.kernels import F32, fp16_to_fp32, get_f16, inline, jit, nearest_int, put_f16

from qf_ik._common import (
    best_index_sub_after,
    best_index_sub_before,
    c_max,
    get_f32,
    make_qx_quants_ik,
    make_qx_quants_iqk,
    put_f32,
    row_weights,
    std_max,
)
from qf_ik._tables import (
    IQ2NL_VALUES,
    IQ3NL_INDEX,
    IQ3NL_VALUES,
    IQ4K_VALUES,
    IQ4NL_INDEX,
    IQ5NL_INDEX,
    IQ5NL_VALUES,
    IQ6NL_INDEX,
    IQ6NL_VALUES,
)

QK_K = 256
IQ2_K_BYTES = 2 + 2 + 8 + 64
IQ3_K_BYTES = 2 + 2 + 2 + 8 + 64 + 32
IQ4_K_BYTES = 2 + 2 + 4 + 8 + 128
IQ5_K_BYTES = 2 + 2 + 4 + 8 + 128 + 32
IQ6_K_BYTES = 2 + 2 + 16 + 128 + 64
Q6_0_BYTES = 2 + 8 + 16

V2 = IQ2NL_VALUES.astype(np.float32)
V3 = IQ3NL_VALUES.astype(np.float32)
V4 = IQ4K_VALUES.astype(np.float32)
V5 = IQ5NL_VALUES.astype(np.float32)
# quantize_iq6_k's own table: values[i] = iq6nl_values[i], values[i + 64] = values[i] + S_IQ6K (1.f)
V6 = np.concatenate([IQ6NL_VALUES[:64].astype(np.float32), IQ6NL_VALUES[:64].astype(np.float32) + np.float32(1.0)])
I3 = IQ3NL_INDEX.astype(np.int16)
I4 = IQ4NL_INDEX.astype(np.int16)
I5 = IQ5NL_INDEX.astype(np.int16)
I6 = IQ6NL_INDEX.astype(np.int16)

A_IQ6K = F32(-127.0)
B_IQ6K = F32(6.2568)
C_IQ6K = F32(0.11218)
D_IQ6K = F32(0.0011972)


# ---------------------------------------------------------------------------------------------------------- lookups
@inline
def tab3():
    return (V3, I3, np.int64(111), np.int64(8), False)


@inline
def tab4():
    return (V4, I4, np.int64(241), np.int64(16), False)


@inline
def tab5():
    return (V5, I5, np.int64(247), np.int64(32), False)


@inline
def tab6():
    return (V6, I6, np.int64(249), np.int64(64), True)


@inline
def tab_for(kind):
    """The table of IQ4_K (4), IQ5_K (5) or IQ6_K (6): (values, index, index length, half size, subtract first)."""
    if kind == 4:
        return tab4()
    if kind == 5:
        return tab5()
    return tab6()


@inline
def bidx(tab, off, x):
    """Index of the table entry nearest x, as ik's best_index_iq{3,4,5,6}nl(values + off, x)."""
    if tab[4]:
        return best_index_sub_before(tab[0], off, tab[1], tab[2], tab[3], x)
    return best_index_sub_after(tab[0], off, tab[1], tab[2], tab[3], x)


@inline
def _weights(x, r, base, qw, use_qw, sigma2, plain_quarter, weight, bsz=16):
    """weight[j] for the bsz values at x[r, base:]: qw·sqrt(σ² + x²) with an imatrix, else 0.25σ² + x²
    (IQ2/3/5/6_K) or x² (IQ4_K, the KS types)."""
    for j in range(bsz):
        xv = x[r, base + j]
        if use_qw:
            weight[j] = qw[base + j] * np.sqrt(sigma2 + xv * xv)
        elif plain_quarter:
            weight[j] = F32(0.25) * sigma2 + xv * xv
        else:
            weight[j] = xv * xv


@jit
def _pm_sums(tab, off, x, r, base, weight, inv, bsz):
    """Σw·q·x and Σw·q² for q = nearest(inv·x) and for q = nearest(−inv·x) (the two signs of the scale)."""
    sqx_p = F32(0.0)
    sq2_p = F32(0.0)
    sqx_m = F32(0.0)
    sq2_m = F32(0.0)
    for j in range(bsz):
        w = weight[j]
        xv = x[r, base + j]
        al = inv * xv
        q = tab[0][off + bidx(tab, off, al)]
        sqx_p += w * q * xv
        sq2_p += w * q * q
        q = tab[0][off + bidx(tab, off, -al)]
        sqx_m += w * q * xv
        sq2_m += w * q * q
    return sqx_p, sq2_p, sqx_m, sq2_m


@jit
def _block_scale(tab, first_needs_q2, x, r, base, weight, ntry, step2, nshift, bsz):
    """The block-of-16 search shared by IQ3_K/IQ4_K/IQ5_K/IQ6_K: returns (d, is_shifted, amax_tiny).

    kind 3: ``best`` starts at 0 and the first fit needs Σq² > 0; kinds 4/5/6: the first fit is taken as it is."""
    amax = F32(0.0)
    mx = F32(0.0)
    for j in range(bsz):
        ax = np.abs(x[r, base + j])
        if ax > amax:
            amax = ax
            mx = x[r, base + j]
    if amax < F32(1e-16):
        return F32(0.0), False, True
    v0 = tab[0][0]
    vs0 = tab[0][nshift]
    d = -mx / v0
    inv = F32(1.0) / d
    sqx_p, sq2_p, sqx_m, sq2_m = _pm_sums(tab, 0, x, r, base, weight, inv, bsz)
    best = F32(0.0)
    if first_needs_q2:
        if sq2_p > F32(0.0):
            d = sqx_p / sq2_p
            best = d * sqx_p
    else:
        d = sqx_p / sq2_p
        best = d * sqx_p
    if sq2_m > F32(0.0) and sqx_m * sqx_m > best * sq2_m:
        d = sqx_m / sq2_m
        best = d * sqx_m
    is_shifted = False
    for itry in range(-ntry, ntry + 1):
        t = F32(2 * itry) if step2 else F32(itry)
        inv = (t + v0) / mx
        sqx_p, sq2_p, sqx_m, sq2_m = _pm_sums(tab, 0, x, r, base, weight, inv, bsz)
        if sq2_p > F32(0.0) and sqx_p * sqx_p > best * sq2_p:
            d = sqx_p / sq2_p
            best = d * sqx_p
            is_shifted = False
        if sq2_m > F32(0.0) and sqx_m * sqx_m > best * sq2_m:
            d = sqx_m / sq2_m
            best = d * sqx_m
            is_shifted = False
        inv = (t + vs0) / mx
        sqx_p, sq2_p, sqx_m, sq2_m = _pm_sums(tab, nshift, x, r, base, weight, inv, bsz)
        if sq2_p > F32(0.0) and sqx_p * sqx_p > best * sq2_p:
            d = sqx_p / sq2_p
            best = d * sqx_p
            is_shifted = True
        if sq2_m > F32(0.0) and sqx_m * sqx_m > best * sq2_m:
            d = sqx_m / sq2_m
            best = d * sqx_m
            is_shifted = True
    return d, is_shifted, False


@jit
def _refit(tab, off, x, r, base, weight, d):
    """IQ3/5/6_K: refit d by least squares on the quants nearest x/d."""
    sumqx = F32(0.0)
    sumq2 = F32(0.0)
    inv = F32(1.0) / d
    for j in range(16):
        w = weight[j]
        xv = x[r, base + j]
        q = tab[0][off + bidx(tab, off, inv * xv)]
        sumqx += w * q * xv
        sumq2 += w * q * q
    if sumq2 > F32(0.0):
        return sumqx / sumq2
    return d


@inline
def _sumx2(x, r, base):
    s = F32(0.0)
    for j in range(QK_K):
        s += x[r, base + j] * x[r, base + j]
    return s


# ------------------------------------------------------------------------------------------------------ IQ4/5/6_K
@jit
def quantize_iq456_k(kind, x, imatrix, out):
    """IQ4_K (kind 4), IQ5_K (5), IQ6_K (6)."""
    n, k = x.shape
    nbl = k // QK_K
    use_qw = imatrix.shape[0] > 0
    qw = np.empty(k, np.float32)
    weight = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    L = np.empty(QK_K, np.uint8)
    tab = tab_for(kind)
    if kind == 4:
        nshift, ntry, bsz = 16, 7, 144
    elif kind == 5:
        nshift, ntry, bsz = 32, 5, 176
    else:
        nshift, ntry, bsz = 64, 5, 212
    for r in range(n):
        if use_qw:
            row_weights(x, r, imatrix, 16, qw)
        for ibl in range(nbl):
            o = ibl * bsz
            for b in range(bsz):
                out[r, o + b] = 0
            xo = ibl * QK_K
            s2 = _sumx2(x, r, xo)
            if kind == 4:
                sigma2 = s2 * (F32(2.0) / F32(256.0))
            else:
                sigma2 = F32(2.0) * s2 / F32(256.0)
            max_scale = F32(0.0)
            amax_scale = F32(0.0)
            extra = 0
            for ib in range(16):
                base = xo + 16 * ib
                _weights(x, r, base, qw, use_qw, sigma2, kind != 4, weight)
                d, shifted, tiny = _block_scale(tab, False, x, r, base, weight, ntry, False, nshift, 16)
                if tiny:
                    scales[ib] = F32(0.0)
                    continue
                if kind != 4 and d != F32(0.0):
                    d = _refit(tab, nshift if shifted else 0, x, r, base, weight, d)
                scales[ib] = d
                if shifted:
                    extra |= 1 << ib
                ad = np.abs(d)
                if ad > amax_scale:
                    amax_scale = ad
                    max_scale = d
            if kind == 4:
                _iq4_k_super(x, r, xo, qw, use_qw, sigma2, scales, extra, max_scale, weight, L, out, o)
            elif amax_scale != F32(0.0):
                _iq56_k_super(kind, tab, x, r, xo, qw, use_qw, sigma2, scales, extra, max_scale, weight, out, o)


@jit
def _iq4_k_super(x, r, xo, qw, use_qw, sigma2, scales, extra, max_scale, weight, L, out, o):
    d = -max_scale / F32(32.0)
    put_f16(out, r, o, d)
    out[r, o + 2] = extra & 0xFF
    out[r, o + 3] = extra >> 8
    inv = F32(1.0) / d if d != F32(0.0) else F32(0.0)
    sumqx = F32(0.0)
    sumq2 = F32(0.0)
    for ib in range(16):
        off = 16 if (extra >> ib) & 1 else 0
        lv = nearest_int(inv * scales[ib])
        lv = max(-32, min(31, lv))
        dl = d * F32(lv)
        idl = F32(1.0) / dl if dl != F32(0.0) else F32(0.0)
        base = xo + 16 * ib
        _weights(x, r, base, qw, use_qw, sigma2, False, weight)
        for j in range(16):
            xv = x[r, base + j]
            li = bidx(tab4(), off, idl * xv)
            L[16 * ib + j] = li
            w = weight[j]
            q = F32(np.int64(V4[off + li]) * lv)
            sumqx += w * q * xv
            sumq2 += w * q * q
        ul = lv + 32
        if ib % 2 == 0:
            out[r, o + 8 + ib // 2] = ul & 0xF
        else:
            out[r, o + 8 + ib // 2] |= (ul & 0xF) << 4
        out[r, o + 4 + ib // 4] |= (ul >> 4) << (2 * (ib % 4))
    if sumq2 > F32(0.0):
        put_f16(out, r, o, sumqx / sumq2)
    for i in range(8):
        for j in range(16):
            out[r, o + 16 + 16 * i + j] = L[32 * i + j] | (L[32 * i + 16 + j] << 4)


@jit
def _iq56_k_super(kind, tab, x, r, xo, qw, use_qw, sigma2, scales, extra, max_scale, weight, out, o):
    nshift = 32 if kind == 5 else 64
    smax = 32 if kind == 5 else 127
    d = -max_scale / F32(smax)
    put_f16(out, r, o, d)
    out[r, o + 2] = extra & 0xFF
    out[r, o + 3] = extra >> 8
    inv = F32(1.0) / d
    sumqx = F32(0.0)
    sumq2 = F32(0.0)
    for ib in range(16):
        ls = nearest_int(inv * scales[ib])
        if kind == 5:
            ls = max(-32, min(31, ls))
            uls = ls + 32
            out[r, o + 8 + ib // 2] |= (uls & 0xF) << (4 * (ib % 2))
            out[r, o + 4 + ib // 4] |= (uls >> 4) << (2 * (ib % 4))
        else:
            ls = max(-127, min(127, ls))
            out[r, o + 4 + ib] = ls & 0xFF
        dl = d * F32(ls)
        if dl != F32(0.0):
            off = nshift if (extra >> ib) & 1 else 0
            base = xo + 16 * ib
            _weights(x, r, base, qw, use_qw, sigma2, True, weight)
            idl = F32(1.0) / dl
            ib32 = ib // 2
            offset = 16 * (ib % 2)
            if kind == 5:
                qs = o + 16 + 32 * (ib32 // 2) + offset
                qh = o + 144 + 32 * (ib32 // 8) + offset
            else:
                qs = o + 20 + 32 * (ib32 // 2) + offset
                qh = o + 148 + 32 * (ib32 // 4) + offset
            for j in range(16):
                xv = x[r, base + j]
                ibest = bidx(tab, off, idl * xv)
                out[r, qs + j] |= (ibest & 0xF) << (4 * (ib32 % 2))
                if kind == 5:
                    out[r, qh + j] |= (ibest >> 4) << (ib32 % 8)
                    q = F32(np.int64(V5[off + ibest]) * ls)
                else:
                    out[r, qh + j] |= (ibest >> 4) << (2 * (ib32 % 4))
                    q = V6[off + ibest] * F32(ls)
                w = weight[j]
                sumqx += w * q * xv
                sumq2 += w * q * q
    if sumq2 > F32(0.0):
        put_f16(out, r, o, sumqx / sumq2)


# ------------------------------------------------------------------------------------------------------------ IQ3_K
@jit
def quantize_iq3_k(x, imatrix, out):
    n, k = x.shape
    nbl = k // QK_K
    use_qw = imatrix.shape[0] > 0
    qw = np.empty(k, np.float32)
    weight = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    for r in range(n):
        if use_qw:
            row_weights(x, r, imatrix, 16, qw)
        for ibl in range(nbl):
            o = ibl * IQ3_K_BYTES
            for b in range(IQ3_K_BYTES):
                out[r, o + b] = 0
            xo = ibl * QK_K
            sigma2 = F32(1.5) * _sumx2(x, r, xo) / F32(256.0)
            extra = 0
            max_abs_scale = F32(0.0)
            for ib in range(16):
                base = xo + 16 * ib
                _weights(x, r, base, qw, use_qw, sigma2, True, weight)
                d, shifted, tiny = _block_scale(tab3(), True, x, r, base, weight, 3, True, 8, 16)
                if tiny or d == F32(0.0):
                    scales[ib] = F32(0.0)
                    continue
                # (ik's 128-step refinement that follows does not change the stored scale: skipped)
                d = _refit(tab3(), 8 if shifted else 0, x, r, base, weight, d)
                scales[ib] = d
                if shifted:
                    extra |= 1 << ib
                max_abs_scale = c_max(max_abs_scale, np.abs(d))
            if max_abs_scale == F32(0.0):
                continue
            d = max_abs_scale / F32(31.0)
            out[r, o + 2] = extra & 0xFF
            out[r, o + 3] = extra >> 8
            inv = F32(1.0) / d
            sumqx = F32(0.0)
            sumq2 = F32(0.0)
            scales_h = 0
            for ib in range(16):
                ls = nearest_int(F32(0.5) * (inv * np.abs(scales[ib]) - F32(1.0)))
                ls = max(0, min(15, ls))
                out[r, o + 6 + ib // 2] |= ls << (4 * (ib % 2))
                neg = scales[ib] < F32(0.0)
                if neg:
                    scales_h |= 1 << ib
                ls = (2 * ls + 1) * (-1 if neg else 1)
                dl = d * F32(ls)
                if dl != F32(0.0):
                    off = 8 if (extra >> ib) & 1 else 0
                    base = xo + 16 * ib
                    _weights(x, r, base, qw, use_qw, sigma2, True, weight)
                    idl = F32(1.0) / dl
                    ib32 = ib // 2
                    offset = 16 * (ib % 2)
                    qs = o + 14 + 32 * (ib32 // 4) + offset
                    qh = o + 78 + 32 * (ib32 // 8) + offset
                    for j in range(16):
                        xv = x[r, base + j]
                        ibest = bidx(tab3(), off, idl * xv)
                        out[r, qs + j] |= (ibest & 3) << (2 * (ib32 % 4))
                        out[r, qh + j] |= (ibest >> 2) << (ib32 % 8)
                        w = weight[j]
                        q = F32(np.int64(V3[off + ibest]) * ls)
                        sumqx += w * q * xv
                        sumq2 += w * q * q
            out[r, o + 4] = scales_h & 0xFF
            out[r, o + 5] = scales_h >> 8
            put_f16(out, r, o, F32(1.01) * (sumqx / sumq2 if sumq2 > F32(0.0) else d))


# ------------------------------------------------------------------------------------------------------------ IQ2_K
@inline
def _bi2(off, x):
    """best_index_iq2nl(iq2nl_values + off, x)."""
    idx = 0 if x < V2[off + 1] else (2 if x > V2[off + 2] else 1)
    return idx if x - V2[off + idx] < V2[off + idx + 1] - x else idx + 1


@inline
def _seg(a, b, v):
    return (a - b) * v


@inline
def iq2_block_search(x, r, base, weight, bsz, max_i1, min_i3, order, sumx, sumw):
    """The exhaustive split search of IQ2_K (blocks of 16) and IQ2_KS (blocks of 32): the block's values sorted,
    every split into 4 runs (i1 < max_i1, i3 >= min_i3) against the table, its shifted twin and both reversed.
    Returns (d, is_shifted)."""
    # std::sort of (x, index) pairs: insertion sort by value, ties by index
    for j in range(bsz):
        order[j] = j
    for j in range(1, bsz):
        c = order[j]
        cv = x[r, base + c]
        i = j - 1
        while i >= 0 and (x[r, base + order[i]] > cv):
            order[i + 1] = order[i]
            i -= 1
        order[i + 1] = c
    sumx[0] = F32(0.0)
    sumw[0] = F32(0.0)
    for j in range(bsz):
        jj = order[j]
        sumw[j + 1] = sumw[j] + weight[jj]
        sumx[j + 1] = sumx[j] + weight[jj] * x[r, base + jj]
    best = F32(0.0)
    d = F32(0.0)
    is_shifted = False
    for i1 in range(max_i1):
        for i2 in range(i1, bsz):
            for i3 in range(max(i2, min_i3), bsz):
                for cand in range(4):
                    off = 4 if (cand & 1) else 0
                    if cand < 2:
                        a0, a1, a2, a3 = V2[off], V2[off + 1], V2[off + 2], V2[off + 3]
                    else:
                        a0, a1, a2, a3 = V2[off + 3], V2[off + 2], V2[off + 1], V2[off]
                    sqx = (_seg(sumx[i1], sumx[0], a0) + _seg(sumx[i2], sumx[i1], a1)
                           + _seg(sumx[i3], sumx[i2], a2) + _seg(sumx[bsz], sumx[i3], a3))
                    sq2 = (_seg(sumw[i1], sumw[0], a0) * a0 + _seg(sumw[i2], sumw[i1], a1) * a1
                           + _seg(sumw[i3], sumw[i2], a2) * a2 + _seg(sumw[bsz], sumw[i3], a3) * a3)
                    if sq2 > F32(0.0) and sqx * sqx > best * sq2:
                        d = sqx / sq2
                        best = d * sqx
                        is_shifted = (cand & 1) == 1
    return d, is_shifted


@jit
def quantize_iq2_k(x, imatrix, out):
    n, k = x.shape
    nbl = k // QK_K
    use_qw = imatrix.shape[0] > 0
    qw = np.empty(k, np.float32)
    weight = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    sw = np.empty(16, np.float32)
    Ls = np.empty(16, np.int8)
    order = np.empty(32, np.int64)
    sumx = np.empty(33, np.float32)
    sumw = np.empty(33, np.float32)
    for r in range(n):
        if use_qw:
            row_weights(x, r, imatrix, 16, qw)
        for ibl in range(nbl):
            o = ibl * IQ2_K_BYTES
            for b in range(IQ2_K_BYTES):
                out[r, o + b] = 0
            xo = ibl * QK_K
            sigma2 = F32(1.5) * _sumx2(x, r, xo) / F32(256.0)
            extra = 0
            max_abs_scale = F32(0.0)
            for ib in range(16):
                base = xo + 16 * ib
                _weights(x, r, base, qw, use_qw, sigma2, True, weight)
                s = F32(0.0)
                amax = F32(0.0)
                for j in range(16):
                    s += weight[j]
                    amax = std_max(amax, np.abs(x[r, base + j]))
                sw[ib] = s
                if amax < F32(1e-16):
                    scales[ib] = F32(0.0)
                    continue
                d, is_shifted = iq2_block_search(x, r, base, weight, 16, 16, 0, order, sumx, sumw)
                scales[ib] = d
                if is_shifted:
                    extra |= 1 << ib
                max_abs_scale = std_max(max_abs_scale, np.abs(d))
            if max_abs_scale == F32(0.0):
                continue
            d = make_qx_quants_iqk(16, 8, scales, Ls, sw)
            if d == F32(0.0):
                continue
            out[r, o + 2] = extra & 0xFF
            out[r, o + 3] = extra >> 8
            inv = F32(1.0) / d
            sumqx = F32(0.0)
            sumq2 = F32(0.0)
            for ib in range(16):
                ls = nearest_int(inv * scales[ib])
                ls = max(-8, min(7, ls))
                out[r, o + 4 + ib // 2] |= (ls + 8) << (4 * (ib % 2))
                dl = d * F32(ls)
                if dl != F32(0.0):
                    off = 4 if (extra >> ib) & 1 else 0
                    base = xo + 16 * ib
                    _weights(x, r, base, qw, use_qw, sigma2, True, weight)
                    idl = F32(1.0) / dl
                    ib32 = ib // 2
                    qs = o + 12 + 32 * (ib32 // 4) + 16 * (ib % 2)
                    for j in range(16):
                        xv = x[r, base + j]
                        ibest = _bi2(off, idl * xv)
                        out[r, qs + j] |= ibest << (2 * (ib32 % 4))
                        w = weight[j]
                        q = F32(np.int64(V2[off + ibest]) * ls)
                        sumqx += w * q * xv
                        sumq2 += w * q * q
            put_f16(out, r, o, F32(1.030) * (sumqx / sumq2 if sumq2 > F32(0.0) else d))


# ------------------------------------------------------------------------------------------------------------- Q6_0
@jit
def quantize_q6_0(x, imatrix, out):
    """ggml-quants.c's quantize_q6_0 (the imatrix as it is)."""
    _q6_0(x, imatrix, out, 0)


@jit
def quantize_q6_0_qhelper(x, imatrix, out):
    """quantize_q6_0 behind ik's QHelper with blocks of 32 (what quantize_q6_0_r4 does)."""
    _q6_0(x, imatrix, out, 32)


@inline
def _q6_0(x, imatrix, out, helper):
    n, k = x.shape
    nb = k // 32
    use_qw = imatrix.shape[0] > 0
    weight = np.empty(32, np.float32)
    L = np.empty(32, np.int8)
    qw = np.empty(k, np.float32)
    for r in range(n):
        if use_qw:
            if helper > 0:
                row_weights(x, r, imatrix, helper, qw)
            else:
                qw[:] = imatrix
        sigma2 = F32(0.0)
        if use_qw:
            s = F32(0.0)
            for j in range(k):
                s += x[r, j] * x[r, j]
            sigma2 = s / F32(k)
        for ib in range(nb):
            base = 32 * ib
            for j in range(32):
                xv = x[r, base + j]
                if use_qw:
                    weight[j] = qw[base + j] * np.sqrt(sigma2 + xv * xv)
                else:
                    weight[j] = xv * xv
            d = make_qx_quants_ik(32, 32, x[r], base, L, weight)
            o = ib * Q6_0_BYTES
            put_f16(out, r, o, d)
            for j in range(8):
                out[r, o + 2 + j] = 0
            for j in range(16):
                xi0 = np.int64(L[j])
                xi1 = np.int64(L[j + 16])
                out[r, o + 10 + j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4)
                h = (xi0 >> 4) | ((xi1 >> 4) << 2)
                out[r, o + 2 + j % 8] |= h << (4 * (j // 8))



# --------------------------------------------------------------------------------------------------- IQ4_KS/IQ5_KS
IQ4_KS_BYTES = 8 + 128
IQ5_KS_BYTES = 8 + 128 + 32


@jit
def quantize_iq45_ks(kind, x, imatrix, out):
    """IQ4_KS (kind 4) and IQ5_KS (5): blocks of 32 with 7-bit scales (+ shift bit) under one float per row."""
    n, k = x.shape
    nbl = k // QK_K
    use_qw = imatrix.shape[0] > 0
    qw = np.empty(k, np.float32)
    weight = np.empty(32, np.float32)
    scales = np.empty(k // 32, np.float32)
    tab = tab_for(kind)
    if kind == 4:
        nshift, ntry, bsz = 16, 7, IQ4_KS_BYTES
    else:
        nshift, ntry, bsz = 32, 5, IQ5_KS_BYTES
    for r in range(n):
        if use_qw:
            row_weights(x, r, imatrix, 32, qw)
        amax_scale = F32(0.0)
        for ibl in range(nbl):
            o = 4 + ibl * bsz
            for b in range(bsz):
                out[r, o + b] = 0
            xo = ibl * QK_K
            sigma2 = _sumx2(x, r, xo) * (F32(2.0) / F32(256.0))
            for ib in range(8):
                base = xo + 32 * ib
                _weights(x, r, base, qw, use_qw, sigma2, False, weight, 32)
                d, shifted, tiny = _block_scale(tab, False, x, r, base, weight, ntry, False, nshift, 32)
                if tiny:
                    scales[8 * ibl + ib] = F32(0.0)
                    continue
                if shifted:
                    out[r, o + ib] = 1
                scales[8 * ibl + ib] = d
                amax_scale = std_max(amax_scale, np.abs(d))
        d = amax_scale / F32(127.0)
        put_f32(out, r, 0, d)
        if d == F32(0.0):
            continue
        inv = F32(1.0) / d
        sumqx = F32(0.0)
        sumq2 = F32(0.0)
        for ibl in range(nbl):
            o = 4 + ibl * bsz
            xo = ibl * QK_K
            sigma2 = _sumx2(x, r, xo) * (F32(2.0) / F32(256.0))
            for ib in range(8):
                off = nshift if out[r, o + ib] & 1 else 0
                lv = nearest_int(F32(0.5) * (inv * scales[8 * ibl + ib] + F32(127.0)))
                lv = max(0, min(127, lv)) << 1
                out[r, o + ib] |= lv
                lv -= 127
                dl = d * F32(lv)
                idl = F32(1.0) / dl if dl != F32(0.0) else F32(0.0)
                base = xo + 32 * ib
                _weights(x, r, base, qw, use_qw, sigma2, False, weight, 32)
                if kind == 4:
                    qs = o + 8 + 16 * ib
                    for j in range(16):
                        x1 = x[r, base + j]
                        x2 = x[r, base + j + 16]
                        i1 = bidx(tab, off, idl * x1)
                        i2 = bidx(tab, off, idl * x2)
                        out[r, qs + j] = i1 | (i2 << 4)
                        w1 = weight[j]
                        w2 = weight[j + 16]
                        q1 = F32(np.int64(V4[off + i1]) * lv)
                        q2 = F32(np.int64(V4[off + i2]) * lv)
                        sumqx += w1 * q1 * x1 + w2 * q2 * x2
                        sumq2 += w1 * q1 * q1 + w2 * q2 * q2
                else:
                    qs = o + 8 + 32 * (ib // 2)
                    qh = o + 136
                    for j in range(32):
                        xv = x[r, base + j]
                        idx = bidx(tab, off, idl * xv)
                        out[r, qs + j] |= (idx & 0xF) << (4 * (ib % 2))
                        out[r, qh + j] |= (idx >> 4) << ib
                        w = weight[j]
                        q = F32(np.int64(V5[off + idx]) * lv)
                        sumqx += w * q * xv
                        sumq2 += w * q * q
        if sumq2 > F32(0.0):
            put_f32(out, r, 0, sumqx / sumq2)


@jit
def dequantize_iq45_ks(kind, data, n_per_row, out):
    bsz = IQ4_KS_BYTES if kind == 4 else IQ5_KS_BYTES
    for r in range(data.shape[0]):
        d = get_f32(data, r, 0)
        for ibl in range(n_per_row // QK_K):
            o = 4 + ibl * bsz
            for ib in range(8):
                sc = np.int64(data[r, o + ib])
                dl = d * F32((sc & 254) - 127)
                y = ibl * QK_K + 32 * ib
                if kind == 4:
                    off = 16 if sc & 1 else 0
                    for j in range(16):
                        q = data[r, o + 8 + 16 * ib + j]
                        out[r, y + j] = dl * V4[off + (q & 0xF)]
                        out[r, y + j + 16] = dl * V4[off + (q >> 4)]
                else:
                    off = 32 if sc & 1 else 0
                    for j in range(32):
                        lo = (np.int64(data[r, o + 8 + 32 * (ib // 2) + j]) >> (4 * (ib % 2))) & 0xF
                        hi = (np.int64(data[r, o + 136 + j]) >> ib) & 1
                        out[r, y + j] = dl * V5[off + (lo | (hi << 4))]


# ------------------------------------------------------------------------------------------------------- dequantize
@jit
def dequantize_iq2_k(data, n_per_row, out):
    for r in range(data.shape[0]):
        for ibl in range(n_per_row // QK_K):
            o = ibl * IQ2_K_BYTES
            d = get_f16(data, r, o)
            extra = np.int64(data[r, o + 2]) | (np.int64(data[r, o + 3]) << 8)
            for ib32 in range(8):
                sc = np.int64(data[r, o + 4 + ib32])
                dl1 = d * F32((sc & 0xF) - 8)
                dl2 = d * F32((sc >> 4) - 8)
                off1 = 4 if (extra >> (2 * ib32)) & 1 else 0
                off2 = 4 if (extra >> (2 * ib32 + 1)) & 1 else 0
                qs = o + 12 + 32 * (ib32 // 4)
                shift = 2 * (ib32 % 4)
                y = ibl * QK_K + 32 * ib32
                for j in range(16):
                    out[r, y + j] = dl1 * V2[off1 + ((data[r, qs + j] >> shift) & 3)]
                    out[r, y + j + 16] = dl2 * V2[off2 + ((data[r, qs + j + 16] >> shift) & 3)]


@jit
def dequantize_iq3_k(data, n_per_row, out):
    for r in range(data.shape[0]):
        for ibl in range(n_per_row // QK_K):
            o = ibl * IQ3_K_BYTES
            d = get_f16(data, r, o)
            extra = np.int64(data[r, o + 2]) | (np.int64(data[r, o + 3]) << 8)
            sh = np.int64(data[r, o + 4]) | (np.int64(data[r, o + 5]) << 8)
            for ib32 in range(8):
                sl = np.int64(data[r, o + 6 + ib32])
                s1 = -1 if (sh >> (2 * ib32)) & 1 else 1
                s2 = -1 if (sh >> (2 * ib32 + 1)) & 1 else 1
                dl1 = d * F32((2 * (sl & 0xF) + 1) * s1)
                dl2 = d * F32((2 * (sl >> 4) + 1) * s2)
                off1 = 8 if (extra >> (2 * ib32)) & 1 else 0
                off2 = 8 if (extra >> (2 * ib32 + 1)) & 1 else 0
                qs = o + 14 + 32 * (ib32 // 4)
                qh = o + 78
                sl_ = 2 * (ib32 % 4)
                shh = ib32 % 8
                y = ibl * QK_K + 32 * ib32
                for j in range(16):
                    i1 = ((data[r, qs + j] >> sl_) & 3) | (((data[r, qh + j] >> shh) & 1) << 2)
                    i2 = ((data[r, qs + j + 16] >> sl_) & 3) | (((data[r, qh + j + 16] >> shh) & 1) << 2)
                    out[r, y + j] = dl1 * V3[off1 + i1]
                    out[r, y + j + 16] = dl2 * V3[off2 + i2]


@jit
def dequantize_iq4_k(data, n_per_row, out):
    for r in range(data.shape[0]):
        for ibl in range(n_per_row // QK_K):
            o = ibl * IQ4_K_BYTES
            d = get_f16(data, r, o)
            extra = np.int64(data[r, o + 2]) | (np.int64(data[r, o + 3]) << 8)
            for ib in range(8):
                sh = np.int64(data[r, o + 4 + ib // 2]) >> (4 * (ib % 2))
                sl = np.int64(data[r, o + 8 + ib])
                dl1 = d * F32(((sl & 0xF) | ((sh << 4) & 0x30)) - 32)
                dl2 = d * F32(((sl >> 4) | ((sh << 2) & 0x30)) - 32)
                off1 = 16 if (extra >> (2 * ib)) & 1 else 0
                off2 = 16 if (extra >> (2 * ib + 1)) & 1 else 0
                y = ibl * QK_K + 32 * ib
                for j in range(16):
                    q = data[r, o + 16 + 16 * ib + j]
                    out[r, y + j] = dl1 * V4[off1 + (q & 0xF)]
                    out[r, y + j + 16] = dl2 * V4[off2 + (q >> 4)]


@jit
def dequantize_iq5_k(data, n_per_row, out):
    for r in range(data.shape[0]):
        for ibl in range(n_per_row // QK_K):
            o = ibl * IQ5_K_BYTES
            d = get_f16(data, r, o)
            extra = np.int64(data[r, o + 2]) | (np.int64(data[r, o + 3]) << 8)
            shift = 0
            for ib64 in range(4):
                sh = np.int64(data[r, o + 4 + ib64])
                sl0 = np.int64(data[r, o + 8 + 2 * ib64])
                sl1 = np.int64(data[r, o + 9 + 2 * ib64])
                dl1 = d * F32(((sl0 & 0xF) | ((sh << 4) & 0x30)) - 32)
                dl2 = d * F32(((sl0 >> 4) | ((sh << 2) & 0x30)) - 32)
                dl3 = d * F32(((sl1 & 0xF) | (sh & 0x30)) - 32)
                dl4 = d * F32(((sl1 >> 4) | ((sh >> 2) & 0x30)) - 32)
                e = extra >> (4 * ib64)
                o1 = 32 if e & 1 else 0
                o2 = 32 if e & 2 else 0
                o3 = 32 if e & 4 else 0
                o4 = 32 if e & 8 else 0
                qs = o + 16 + 32 * ib64
                qh = o + 144
                y = ibl * QK_K + 64 * ib64
                for j in range(16):
                    a = np.int64(data[r, qs + j])
                    b = np.int64(data[r, qs + j + 16])
                    ha = np.int64(data[r, qh + j]) >> shift
                    hb = np.int64(data[r, qh + j + 16]) >> shift
                    out[r, y + j] = dl1 * V5[o1 + ((a & 0xF) | ((ha & 1) << 4))]
                    out[r, y + j + 16] = dl2 * V5[o2 + ((b & 0xF) | ((hb & 1) << 4))]
                    out[r, y + j + 32] = dl3 * V5[o3 + ((a >> 4) | ((ha & 2) << 3))]
                    out[r, y + j + 48] = dl4 * V5[o4 + ((b >> 4) | ((hb & 2) << 3))]
                shift += 2


@inline
def _iq6_val(q, m):
    q = F32(q)
    return A_IQ6K + q * (B_IQ6K + q * (-C_IQ6K + q * D_IQ6K)) + m


@jit
def dequantize_iq6_k(data, n_per_row, out):
    for r in range(data.shape[0]):
        for ibl in range(n_per_row // QK_K):
            o = ibl * IQ6_K_BYTES
            d = get_f16(data, r, o)
            extra = np.int64(data[r, o + 2]) | (np.int64(data[r, o + 3]) << 8)
            shift = 0
            for ib64 in range(4):
                dls = np.empty(4, np.float32)
                ms = np.empty(4, np.float32)
                for t in range(4):
                    dls[t] = d * F32(np.int8(data[r, o + 4 + 4 * ib64 + t]))
                    ms[t] = F32(1.0) if (extra >> (4 * ib64 + t)) & 1 else F32(0.0)
                qs = o + 20 + 32 * ib64
                qh = o + 148 + 32 * (ib64 // 2)
                y = ibl * QK_K + 64 * ib64
                for j in range(16):
                    a = np.int64(data[r, qs + j])
                    b = np.int64(data[r, qs + j + 16])
                    ha = np.int64(data[r, qh + j]) >> shift
                    hb = np.int64(data[r, qh + j + 16]) >> shift
                    out[r, y + j] = dls[0] * _iq6_val((a & 0xF) | ((ha & 0x03) << 4), ms[0])
                    out[r, y + j + 16] = dls[1] * _iq6_val((b & 0xF) | ((hb & 0x03) << 4), ms[1])
                    out[r, y + j + 32] = dls[2] * _iq6_val((a >> 4) | ((ha & 0x0C) << 2), ms[2])
                    out[r, y + j + 48] = dls[3] * _iq6_val((b >> 4) | ((hb & 0x0C) << 2), ms[3])
                shift += 4
                if shift == 8:
                    shift = 0


@jit
def dequantize_q6_0(data, n_per_row, out):
    for r in range(data.shape[0]):
        for ib in range(n_per_row // 32):
            o = ib * Q6_0_BYTES
            d = get_f16(data, r, o)
            for j in range(16):
                h = np.int64(data[r, o + 2 + j % 8]) >> (4 * (j // 8))
                q = np.int64(data[r, o + 10 + j])
                x0 = ((q & 0x0F) | ((h << 4) & 0x30)) - 32
                x1 = ((q >> 4) | ((h << 2) & 0x30)) - 32
                out[r, 32 * ib + j] = F32(x0) * d
                out[r, 32 * ib + j + 16] = F32(x1) * d


_ = fp16_to_fp32  # re-exported for the repack module
