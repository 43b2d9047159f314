"""numba ports of ik_llama.cpp's own searches for mainline types (same byte layouts, other bytes): the alternatives
that strategies keeping native also keep per block when better (:meth:`qf.codec.Codec.alternatives`).

ik's row functions (ggml-quants.c of the commit in plugins/qf-ik/REFERENCE.md) are llama.cpp's, but their helpers
differ:

* ``make_qx_quants`` (Q4_0 and Q5_0 with an imatrix, Q3_K with an imatrix, Q6_K always): a second family of
  candidate scales and a one-quant-at-a-time refinement (qf.kernels.make_qx_quants_ik);
* ``quantize_row_iq4_nl_impl`` (IQ4_NL, IQ4_XS, with and without an imatrix): the index-table lookup
  ``best_index_iq4nl``, candidate scales from both ends of the table, then a one-quant-at-a-time refinement;
* ``make_qkx3_quants`` (Q4_1, Q5_1, Q4_K, Q5_K and Q2_K with an imatrix): sums and errors in double, then a
  one-quant-at-a-time refinement of the quants (make_qkx3_quants_ik); ``make_qp_quants`` (the super-block scales of
  Q4_K, Q5_K and Q2_K with an imatrix) with eps 1e-16 and an unguarded final division;
* ``quantize_row_q2_K_impl`` (Q2_K with an imatrix): σ² = 0.75·Σx²/256, the quants from the super-block scales not
  rounded through fp16; ``quantize_row_q2_K_ref`` (without one): a ternary ("TriNet") shortcut tested over the whole
  chunk, and ``make_qkx2_quants`` treating max − min < 1e-10 as constant.

Byte-exact with ik's ``ggml_quantize_chunk`` built without FMA contraction (plugins/qf-ik/tests/
test_strategies_vs_ik.py).  ``x`` float32 ``(rows, n_per_row)``, ``imatrix`` float32 ``(n_per_row,)`` or empty,
``out`` uint8 ``(rows, row_bytes)``; float32 in C's order (see qf.kernels).
"""

from __future__ import annotations

import numpy as np

from qf.kernels import (
    F32,
    best_index_sub_after,
    c_max,
    index_table,
    inline,
    jit,
    make_qx_quants_ik,
    nearest_int,
    put_f16_at,
)
from qf_plugins.quants._kquant_kernels import (
    _put_scale_min_k4,
    _q2k_finish,
    _q2k_scales_ref,
    _q3k_finish,
    _q3k_put_scales,
    _q6k_finish,
    _q6k_scales,
    _q45k_finish,
)
from qf_plugins.quants._legacy_kernels import _legacy_weights, _row_sigma2
from qf_plugins.quants._search_kernels import qp_quants

QK_K = 256
QK = 32
Q2_K_BYTES = 84
Q3_K_BYTES = 110
Q4_K_BYTES = 144
Q5_K_BYTES = 176
Q6_K_BYTES = 210
GROUP_MAX_EPS = F32(1e-15)
KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.int8)
IQ4NL_INDEX = index_table(KVALUES_IQ4NL)
N_INDEX = IQ4NL_INDEX.shape[0]


@inline
def _put_quants(out, r, o, L, nbits):
    """A 32-block's quants ``L`` at ``out[r, o:]`` after its scale fields: 16 bytes of nibble pairs (``nbits`` 4), or
    (5) the fifth bits as a little-endian uint32 ``qh`` and then the nibble pairs."""
    if nbits == 4:
        for j in range(16):
            out[r, o + j] = L[j] | (L[j + 16] << 4)
        return
    qh = 0
    for j in range(16):
        out[r, o + 4 + j] = (L[j] & 0xF) | ((L[j + 16] & 0xF) << 4)
        qh |= ((L[j] & 0x10) >> 4) << j
        qh |= ((L[j + 16] & 0x10) >> 4) << (j + 16)
    for b in range(4):
        out[r, o + b] = (qh >> (8 * b)) & 0xFF


# ---------------------------------------------------------------------------------------------------------------------
# Q4_0 / Q5_0 with an imatrix: quantize_row_q{4,5}_0_impl, weights qw·sqrt(σ² + x²), σ² over the row

@jit
def _q40_q50(x, imatrix, out, nbits):
    """Q4_0 (``nbits`` 4: d, qs[16]) or Q5_0 (5: d, qh[4], qs[16]) with an imatrix."""
    rows, k = x.shape
    nmax = 8 if nbits == 4 else 16
    size = 18 if nbits == 4 else 22
    weight = np.empty(QK, np.float32)
    L = np.empty(QK, np.int32)
    for r in range(rows):
        xr = x[r]
        sigma2 = _row_sigma2(x, r, k)
        for ib in range(k // QK):
            xo = ib * QK
            _legacy_weights(x, r, xo, imatrix, sigma2, weight)
            d = make_qx_quants_ik(QK, nmax, xr, xo, L, weight)
            o = ib * size
            put_f16_at(out[r], o, d)
            _put_quants(out, r, o + 2, L, nbits)


# ---------------------------------------------------------------------------------------------------------------------
# Q3_K with an imatrix (quantize_row_q3_K_impl) and Q6_K (quantize_row_q6_K_impl / _ref)

@jit
def quantize_q3_k(x, imatrix, out):
    rows, k = x.shape
    weight = np.empty(16, np.float32)
    sw = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    Lb = np.empty(16, np.int32)
    Ls = np.empty(16, np.int32)
    L = np.empty(QK_K, np.int32)
    T = np.empty(2 * QK_K, np.float32)
    Q = np.empty(QK_K, np.int32)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for i in range(k // QK_K):
            xo = i * QK_K
            o = i * Q3_K_BYTES
            sumx2 = F32(0.0)
            for j in range(QK_K):
                sumx2 += xr[xo + j] * xr[xo + j]
            sigma2 = F32(2.0) * sumx2 / F32(QK_K)
            for j in range(16):
                for m in range(16):
                    v = xr[xo + 16 * j + m]
                    weight[m] = imatrix[xo + 16 * j + m] * np.sqrt(sigma2 + v * v)
                sumw = F32(0.0)
                for m in range(16):
                    sumw += weight[m]
                sw[j] = sumw
                scales[j] = make_qx_quants_ik(16, 4, xr, xo + 16 * j, Lb, weight)
                for m in range(16):
                    L[16 * j + m] = Lb[m]
            d_block = make_qx_quants_ik(16, 32, scales, 0, Ls, sw)
            _q3k_put_scales(orow, o + 96, Ls)
            put_f16_at(orow, o + 108, d_block)
            _q3k_finish(xr, xo, L, orow, o, T, Q)


@jit
def quantize_q6_k(x, imatrix, out):
    """With an imatrix its raw values are the weights, without one x² (make_qx_quants' rmse_type 1)."""
    rows, k = x.shape
    weighted = imatrix.shape[0] > 0
    w = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    Lb = np.empty(16, np.int32)
    L = np.empty(QK_K, np.int32)
    T = np.empty(2 * QK_K, np.float32)
    Q = np.empty(QK_K, np.int32)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for i in range(k // QK_K):
            xo = i * QK_K
            o = i * Q6_K_BYTES
            for ib in range(16):
                for j in range(16):
                    v = xr[xo + 16 * ib + j]
                    w[j] = imatrix[xo + 16 * ib + j] if weighted else v * v
                scales[ib] = make_qx_quants_ik(16, 32, xr, xo + 16 * ib, Lb, w)
                for j in range(16):
                    L[16 * ib + j] = Lb[j]
            if _q6k_scales(scales, orow, o):
                _q6k_finish(xr, xo, L, orow, o, T, Q)


# ---------------------------------------------------------------------------------------------------------------------
# IQ4_NL / IQ4_XS: quantize_row_iq4_nl_impl with ntry = 7

@jit
def _best(v):
    return best_index_sub_after(KVALUES_IQ4NL, 0, IQ4NL_INDEX, N_INDEX, 16, v)


@jit
def _iq4_sums(xr, xo, weight, id_):
    sumqx = F32(0.0)
    sumq2 = F32(0.0)
    for j in range(QK):
        q = F32(KVALUES_IQ4NL[_best(id_ * xr[xo + j])])
        w = weight[j]
        sumqx += w * q * xr[xo + j]
        sumq2 += w * q * q
    return sumqx, sumq2


@jit
def _iq4_block(xr, xo, weight, Lb):
    """One block of 32: the scale (0 for an all-zero block, Lb then untouched); Lb gets the table indices."""
    values = KVALUES_IQ4NL
    amax = F32(0.0)
    mx = F32(0.0)
    for j in range(QK):
        ax = np.abs(xr[xo + j])
        if ax > amax:
            amax = ax
            mx = xr[xo + j]
    if amax < GROUP_MAX_EPS:
        return F32(0.0)
    d = -mx / F32(values[0])
    id_ = F32(1.0) / d
    sumqx = F32(0.0)
    sumq2 = F32(0.0)
    for j in range(QK):
        lv = _best(id_ * xr[xo + j])
        Lb[j] = lv
        q = F32(values[lv])
        w = weight[j]
        sumqx += w * q * xr[xo + j]
        sumq2 += w * q * q
    d = sumqx / sumq2
    best = d * sumqx
    best_sumqx = sumqx
    best_sumq2 = sumq2
    for itry in range(-7, 8):
        for end in range(2):
            id_ = F32(itry + np.int64(values[0] if end == 0 else values[15])) / mx
            sumqx, sumq2 = _iq4_sums(xr, xo, weight, id_)
            if sumq2 > F32(0.0) and sumqx * sumqx > best * sumq2:
                d = sumqx / sumq2
                best = d * sumqx
                best_sumqx = sumqx
                best_sumq2 = sumq2
                for j in range(QK):
                    Lb[j] = _best(id_ * xr[xo + j])
    sumqx = best_sumqx
    sumq2 = best_sumq2
    for _ in range(32 * QK):
        min_step = F32(np.inf)
        best_j = -1
        dir_ = 0
        for j in range(QK):
            w = weight[j]
            lj = Lb[j]
            g = d * w * (xr[xo + j] - d * F32(values[lj]))
            if g > F32(0.0) and lj < 15:
                step = F32(np.int64(values[lj + 1]) - np.int64(values[lj])) / g
                if step < min_step:
                    min_step = step
                    best_j = j
                    dir_ = 1
            elif g < F32(0.0) and lj > 0:
                step = F32(np.int64(values[lj - 1]) - np.int64(values[lj])) / g
                if step < min_step:
                    min_step = step
                    best_j = j
                    dir_ = -1
        if best_j < 0:
            break
        w = weight[best_j]
        v0 = np.int64(values[Lb[best_j]])
        v1 = np.int64(values[Lb[best_j] + dir_])
        new_sumqx = sumqx + w * xr[xo + best_j] * F32(v1 - v0)
        new_sumq2 = sumq2 + w * F32(v1 * v1 - v0 * v0)
        if new_sumq2 > F32(0.0) and new_sumqx * new_sumqx > best * new_sumq2:
            sumqx = new_sumqx
            sumq2 = new_sumq2
            d = sumqx / sumq2
            best = d * sumqx
            Lb[best_j] += dir_
        else:
            break
    return d


@jit
def _iq4_weights(xr, xo, imatrix, weighted, sigma2, weight):
    for j in range(QK):
        v = xr[xo + j]
        weight[j] = imatrix[xo + j] * np.sqrt(sigma2 + v * v) if weighted else v * v


@jit
def quantize_iq4_nl(x, imatrix, out):
    rows, k = x.shape
    weighted = imatrix.shape[0] > 0
    weight = np.empty(QK, np.float32)
    L = np.zeros(QK, np.int32)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for ib in range(k // QK):
            xo = ib * QK
            o = ib * 18
            sigma2 = F32(0.0)
            for j in range(QK):
                sigma2 += xr[xo + j] * xr[xo + j]
            sigma2 *= F32(2.0 / QK)
            _iq4_weights(xr, xo, imatrix, weighted, sigma2, weight)
            d = _iq4_block(xr, xo, weight, L)
            put_f16_at(orow, o, d)
            id_ = F32(1.0) / d if d != F32(0.0) else F32(0.0)
            for j in range(QK):
                L[j] = _best(id_ * xr[xo + j])
            for j in range(16):
                orow[o + 2 + j] = L[j] | (L[j + 16] << 4)


@jit
def quantize_iq4_xs(x, imatrix, out):
    rows, k = x.shape
    weighted = imatrix.shape[0] > 0
    weight = np.empty(QK, np.float32)
    scales = np.empty(8, np.float32)
    L = np.zeros(QK_K, np.int32)
    Lb = np.zeros(QK, np.int32)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for i in range(k // QK_K):
            xs = i * QK_K
            o = i * 136
            sigma2 = F32(0.0)
            for j in range(QK_K):
                sigma2 += xr[xs + j] * xr[xs + j]
            sigma2 *= F32(2.0 / QK_K)
            max_scale = F32(0.0)
            amax_scale = F32(0.0)
            for ib in range(8):
                xo = xs + ib * QK
                _iq4_weights(xr, xo, imatrix, weighted, sigma2, weight)
                d = _iq4_block(xr, xo, weight, Lb)
                scales[ib] = d
                if np.abs(d) > amax_scale:
                    amax_scale = np.abs(d)
                    max_scale = d
            d = -max_scale / F32(32.0)
            put_f16_at(orow, o, d)
            id_ = F32(1.0) / d if d != F32(0.0) else F32(0.0)
            sh = 0
            for ib in range(8):
                lv = nearest_int(id_ * scales[ib])
                lv = max(-32, min(31, lv))
                dl = d * F32(lv)
                idl = F32(1.0) / dl if dl != F32(0.0) else F32(0.0)
                for j in range(QK):
                    L[ib * QK + j] = _best(idl * xr[xs + ib * QK + j])
                lv += 32
                if ib % 2 == 0:
                    orow[o + 4 + ib // 2] = lv & 0xF
                else:
                    orow[o + 4 + ib // 2] |= (lv & 0xF) << 4
                sh |= (lv >> 4) << (2 * ib)
            orow[o + 2] = sh & 0xFF
            orow[o + 3] = (sh >> 8) & 0xFF
            for ib in range(8):
                for j in range(16):
                    orow[o + 8 + 16 * ib + j] = L[32 * ib + j] | (L[32 * ib + 16 + j] << 4)


@jit
def quantize_q4_0(x, imatrix, out):
    _q40_q50(x, imatrix, out, 4)


@jit
def quantize_q5_0(x, imatrix, out):
    _q40_q50(x, imatrix, out, 5)


# ---------------------------------------------------------------------------------------------------------------------
# ik's make_qkx3_quants (sums and errors in double, then a one-quant-at-a-time refinement), make_qp_quants (eps
# 1e-16, no guard of the final division) and make_qkx2_quants (max − min < 1e-10 counts as constant)

@jit
def make_qkx3_quants_ik(n, nmax, x, xo, w, L, Laux, rmin, rdelta, nstep):
    """ik's ``make_qkx3_quants(n, nmax, x + xo, w, L, &the_min, Laux, rmin, rdelta, nstep, use_mad=false)`` with
    weights given: returns (scale, the_min); L gets the quants."""
    mn = x[xo]
    mx = x[xo]
    sum_w = np.float64(w[0])
    sum_x = sum_w * np.float64(x[xo])
    sum_x2 = sum_w * np.float64(x[xo]) * np.float64(x[xo])
    for i in range(1, n):
        xi = x[xo + i]
        if xi < mn:
            mn = xi
        if xi > mx:
            mx = xi
        wi = np.float64(w[i])
        sum_w += wi
        sum_x += wi * np.float64(xi)
        sum_x2 += wi * np.float64(xi) * np.float64(xi)
    if mn > F32(0.0):
        mn = F32(0.0)
    if mx - mn < F32(1e-10):
        for i in range(n):
            L[i] = 0
        return F32(0.0), -mn
    iscale = F32(nmax) / (mx - mn)
    scale = F32(1.0) / iscale
    best_mad = 0.0
    for i in range(n):
        lv = max(0, min(nmax, nearest_int(iscale * (x[xo + i] - mn))))
        L[i] = lv
        diff = np.float64(scale) * np.float64(lv) + np.float64(mn) - np.float64(x[xo + i])
        best_mad += np.float64(w[i]) * (diff * diff)
    for is_ in range(nstep + 1):
        iscale = (rmin + rdelta * F32(is_) + F32(nmax)) / (mx - mn)
        sum_l = 0.0
        sum_l2 = 0.0
        sum_xl = 0.0
        for i in range(n):
            lv = max(0, min(nmax, nearest_int(iscale * (x[xo + i] - mn))))
            Laux[i] = lv
            wl = np.float64(w[i]) * np.float64(lv)
            sum_l += wl
            sum_l2 += wl * np.float64(lv)
            sum_xl += wl * np.float64(x[xo + i])
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > 0.0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > 0.0:
                this_min = 0.0
                this_scale = sum_xl / sum_l2
            mad = (sum_x2 - 2.0 * this_scale * sum_xl - 2.0 * this_min * sum_x
                   + 2.0 * this_scale * this_min * sum_l + this_scale * this_scale * sum_l2
                   + this_min * this_min * sum_w)
            if mad < best_mad:
                for i in range(n):
                    L[i] = Laux[i]
                best_mad = mad
                scale = F32(this_scale)
                mn = F32(this_min)
    sum_l = 0.0
    sum_l2 = 0.0
    sum_xl = 0.0
    for i in range(n):
        wl = np.float64(w[i]) * np.float64(L[i])
        sum_l += wl
        sum_l2 += wl * np.float64(L[i])
        sum_xl += wl * np.float64(x[xo + i])
    ds = np.float64(scale)
    dm = np.float64(mn)
    best = 2.0 * ds * sum_xl + 2.0 * dm * sum_x - 2.0 * ds * dm * sum_l - ds * ds * sum_l2 - dm * dm * sum_w
    last_j = -1
    last_dir = 0
    for _ in range(nmax * n):
        gmax = F32(0.0)
        best_j = -1
        dir_ = 0
        for j in range(n):
            g = x[xo + j] - scale * F32(L[j]) - mn
            if g > F32(0.0) and L[j] < nmax and g > gmax:
                gmax = g
                best_j = j
                dir_ = 1
            elif g < F32(0.0) and L[j] > 0 and -g > gmax:
                gmax = -g
                best_j = j
                dir_ = -1
        if best_j < 0 or (best_j == last_j and dir_ == -last_dir):
            break
        wj = np.float64(w[best_j])
        sum_l += wj * np.float64(dir_)
        sum_l2 += wj * np.float64(2 * L[best_j] * dir_ + 1)
        sum_xl += wj * np.float64(x[xo + best_j]) * np.float64(dir_)
        D = sum_w * sum_l2 - sum_l * sum_l
        if D <= 0.0:
            break
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
        if this_min > 0.0:
            this_min = 0.0
            this_scale = sum_xl / sum_l2
        if this_scale < 0.0:
            break
        score = (2.0 * this_scale * sum_xl + 2.0 * this_min * sum_x - 2.0 * this_scale * this_min * sum_l
                 - this_scale * this_scale * sum_l2 - this_min * this_min * sum_w)
        if score <= best:
            break
        best = score
        scale = F32(this_scale)
        mn = F32(this_min)
        L[best_j] += dir_
        last_j = best_j
        last_dir = dir_
    return scale, -mn


@jit
def make_qp_quants_ik(n, nmax, x, L, qw):
    """ik's ``make_qp_quants``: llama.cpp's with eps 1e-16 and an unguarded final division; L holds C's uint8_t
    values (stores truncated to 8 bits)."""
    return qp_quants(n, nmax, x, L, qw, F32(1e-16), False)


@jit
def make_qkx2_quants_mad_ik(n, nmax, x, xo, w, L, Laux, rmin, rdelta, nstep):
    """ik's ``make_qkx2_quants(..., use_mad=true)`` (float32): returns (scale, the_min)."""
    mn = x[xo]
    mx = x[xo]
    sum_w = w[0]
    sum_x = sum_w * x[xo]
    for i in range(1, n):
        xi = x[xo + i]
        if xi < mn:
            mn = xi
        if xi > mx:
            mx = xi
        sum_w += w[i]
        sum_x += w[i] * xi
    if mn > F32(0.0):
        mn = F32(0.0)
    if mx - mn < F32(1e-10):
        for i in range(n):
            L[i] = 0
        return F32(0.0), -mn
    iscale = F32(nmax) / (mx - mn)
    scale = F32(1.0) / iscale
    best_mad = F32(0.0)
    for i in range(n):
        lv = max(0, min(nmax, nearest_int(iscale * (x[xo + i] - mn))))
        L[i] = lv
        best_mad += w[i] * np.abs(scale * F32(lv) + mn - x[xo + i])
    for is_ in range(nstep + 1):
        iscale = (rmin + rdelta * F32(is_) + F32(nmax)) / (mx - mn)
        sum_l = F32(0.0)
        sum_l2 = F32(0.0)
        sum_xl = F32(0.0)
        for i in range(n):
            lv = max(0, min(nmax, nearest_int(iscale * (x[xo + i] - mn))))
            Laux[i] = lv
            wi = w[i]
            sum_l += wi * F32(lv)
            sum_l2 += wi * F32(lv) * F32(lv)
            sum_xl += wi * F32(lv) * x[xo + i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > F32(0.0):
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > F32(0.0):
                this_min = F32(0.0)
                this_scale = sum_xl / sum_l2
            mad = F32(0.0)
            for i in range(n):
                mad += w[i] * np.abs(this_scale * F32(Laux[i]) + this_min - x[xo + i])
            if mad < best_mad:
                for i in range(n):
                    L[i] = Laux[i]
                best_mad = mad
                scale = this_scale
                mn = this_min
    return scale, -mn


# ---------------------------------------------------------------------------------------------------------------------
# Q4_1 / Q5_1 with an imatrix: quantize_row_q{4,5}_1_impl, weights qw·sqrt(σ² + x²), σ² over the row

@jit
def _q41_q51(x, imatrix, out, nbits):
    """Q4_1 (``nbits`` 4: d, m, qs[16]) or Q5_1 (5: d, m, qh[4], qs[16]) with an imatrix."""
    rows, k = x.shape
    nmax = 15 if nbits == 4 else 31
    size = 20 if nbits == 4 else 24
    weight = np.empty(QK, np.float32)
    L = np.empty(QK, np.int32)
    Laux = np.empty(QK, np.int32)
    for r in range(rows):
        xr = x[r]
        sigma2 = _row_sigma2(x, r, k)
        for ib in range(k // QK):
            xo = ib * QK
            _legacy_weights(x, r, xo, imatrix, sigma2, weight)
            d, the_min = make_qkx3_quants_ik(QK, nmax, xr, xo, weight, L, Laux, F32(-0.9), F32(0.05), 36)
            o = ib * size
            put_f16_at(out[r], o, d)
            put_f16_at(out[r], o + 2, -the_min)
            _put_quants(out, r, o + 4, L, nbits)


@jit
def quantize_q4_1(x, imatrix, out):
    _q41_q51(x, imatrix, out, 4)


@jit
def quantize_q5_1(x, imatrix, out):
    _q41_q51(x, imatrix, out, 5)


# ---------------------------------------------------------------------------------------------------------------------
# Q4_K / Q5_K with an imatrix: quantize_row_q{4,5}_K_impl (σ² = 2·Σx²/256 per super-block)

@jit
def _q45k(x, imatrix, out, nbits):
    rows, k = x.shape
    nmax = 15 if nbits == 4 else 31
    size = Q4_K_BYTES if nbits == 4 else Q5_K_BYTES
    weight = np.empty(QK, np.float32)
    sw = np.empty(8, np.float32)
    scales = np.empty(8, np.float32)
    mins = np.empty(8, np.float32)
    Ls = np.empty(8, np.int32)
    Lm = np.empty(8, np.int32)
    Lb = np.empty(QK, np.int32)
    Laux = np.empty(QK, np.int32)
    L = np.empty(QK_K, np.int32)
    T = np.empty(2 * QK_K, np.float32)
    Q = np.empty(QK_K, np.int32)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for i in range(k // QK_K):
            xs = i * QK_K
            o = i * size
            sum_x2 = F32(0.0)
            for j in range(QK_K):
                sum_x2 += xr[xs + j] * xr[xs + j]
            sigma2 = F32(2.0) * sum_x2 / F32(QK_K)
            for j in range(8):
                xo = xs + 32 * j
                for m in range(QK):
                    weight[m] = imatrix[xo + m] * np.sqrt(sigma2 + xr[xo + m] * xr[xo + m])
                sumw = F32(0.0)
                for m in range(QK):
                    sumw += weight[m]
                sw[j] = sumw
                scales[j], mins[j] = make_qkx3_quants_ik(QK, nmax, xr, xo, weight, Lb, Laux, F32(-0.9), F32(0.05),
                                                         36)
                for m in range(QK):
                    L[32 * j + m] = Lb[m]
            d_block = make_qp_quants_ik(8, 63, scales, Ls, sw)
            m_block = make_qp_quants_ik(8, 63, mins, Lm, sw)
            if nbits == 5:  # quantize_row_q5_K_impl clamps to 63, q4_K_impl does not
                for j in range(8):
                    Ls[j] = min(63, Ls[j])
                    Lm[j] = min(63, Lm[j])
            _put_scale_min_k4(orow, o + 4, Ls, Lm)
            put_f16_at(orow, o, d_block)
            put_f16_at(orow, o + 2, m_block)
            _q45k_finish(xr, xs, L, orow, o, nmax, T, Q)


@jit
def quantize_q4_k(x, imatrix, out):
    _q45k(x, imatrix, out, 4)


@jit
def quantize_q5_k(x, imatrix, out):
    _q45k(x, imatrix, out, 5)


# ---------------------------------------------------------------------------------------------------------------------
# Q2_K: with an imatrix quantize_row_q2_K_impl (σ² = 0.75·Σx²/256, the quants from the unrounded super-block scales);
# without one quantize_row_q2_K_ref, whose "TriNet" test looks at the whole chunk (all rows as one)

@jit
def _q2k_pack(orow, o, L):
    for j in range(0, QK_K, 128):
        for m in range(32):
            orow[o + 16 + j // 4 + m] = (L[j + m] | (L[j + m + 32] << 2) | (L[j + m + 64] << 4)
                                         | (L[j + m + 96] << 6)) & 0xFF


@jit
def _q2k_imatrix(x, imatrix, out):
    rows, k = x.shape
    weight = np.empty(16, np.float32)
    sw = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    mins = np.empty(16, np.float32)
    Ls = np.empty(16, np.int32)
    Lm = np.empty(16, np.int32)
    Lb = np.empty(16, np.int32)
    Laux = np.empty(16, np.int32)
    L = np.empty(QK_K, np.int32)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for i in range(k // QK_K):
            xs = i * QK_K
            o = i * Q2_K_BYTES
            sumx2 = F32(0.0)
            for j in range(QK_K):
                sumx2 += xr[xs + j] * xr[xs + j]
            sigma2 = F32(0.75) * sumx2 / F32(QK_K)
            for j in range(16):
                xo = xs + 16 * j
                for m in range(16):
                    weight[m] = imatrix[xo + m] * np.sqrt(sigma2 + xr[xo + m] * xr[xo + m])
                s = F32(0.0)
                for m in range(16):
                    s += weight[m]
                sw[j] = s
                scales[j], mins[j] = make_qkx3_quants_ik(16, 3, xr, xo, weight, Lb, Laux, F32(-0.9), F32(0.05), 36)
            dm = make_qp_quants_ik(16, 15, scales, Ls, sw)
            mm = make_qp_quants_ik(16, 15, mins, Lm, sw)
            put_f16_at(orow, o + 80, dm)
            put_f16_at(orow, o + 82, mm)
            for j in range(16):
                d = dm * F32(Ls[j])
                m_ = mm * F32(Lm[j])
                id_ = F32(1.0) / d if d != F32(0.0) else F32(0.0)
                for m in range(16):
                    L[16 * j + m] = max(0, min(3, nearest_int((xr[xs + 16 * j + m] + m_) * id_)))
            for j in range(16):
                orow[o + j] = (Ls[j] | (Lm[j] << 4)) & 0xFF
            _q2k_pack(orow, o, L)


@jit
def _q2k_ref(x, out):
    rows, k = x.shape
    # the TriNet test over the whole chunk, in memory order
    mx = F32(0.0)
    for r in range(rows):
        for j in range(k):
            mx = c_max(mx, np.abs(x[r, j]))
    mse0 = F32(0.0)
    mse = F32(0.0)
    lo = F32(-0.5) * mx
    hi = F32(0.5) * mx
    for r in range(rows):
        for j in range(k):
            v = x[r, j]
            lv = -1 if v < lo else (0 if v < hi else 1)
            mse0 += v * v
            diff = v - mx * F32(lv)
            mse += diff * diff
    L = np.empty(QK_K, np.int32)
    if mse < F32(0.1) * mse0:
        for r in range(rows):
            orow = out[r]
            for i in range(k // QK_K):
                o = i * Q2_K_BYTES
                put_f16_at(orow, o + 80, mx)
                put_f16_at(orow, o + 82, mx)
                for j in range(16):
                    orow[o + j] = 1 | (1 << 4)
                for j in range(QK_K):
                    v = x[r, i * QK_K + j]
                    L[j] = 0 if v < lo else (1 if v < hi else 2)
                _q2k_pack(orow, o, L)
        return
    weight = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    mins = np.empty(16, np.float32)
    Lb = np.empty(16, np.int32)
    Laux = np.empty(16, np.int32)
    T = np.empty(2 * QK_K, np.float32)
    Q = np.empty(QK_K, np.int32)
    for r in range(rows):
        xr = x[r]
        orow = out[r]
        for i in range(k // QK_K):
            xs = i * QK_K
            o = i * Q2_K_BYTES
            for j in range(16):
                xo = xs + 16 * j
                for m in range(16):
                    weight[m] = np.abs(xr[xo + m])
                scales[j], mins[j] = make_qkx2_quants_mad_ik(16, 3, xr, xo, weight, Lb, Laux, F32(-0.5), F32(0.1), 15)
                for m in range(16):
                    L[16 * j + m] = Lb[m]
            _q2k_scales_ref(scales, mins, orow, o)
            _q2k_finish(xr, xs, L, orow, o, T, Q)


@jit
def quantize_q2_k(x, imatrix, out):
    if imatrix.shape[0] > 0:
        _q2k_imatrix(x, imatrix, out)
    else:
        _q2k_ref(x, out)
