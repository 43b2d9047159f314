"""numba ports of ik_llama.cpp's own searches for mainline types (same byte layouts, other bytes): the alternatives
that strategies keeping native also keep per block when better (:meth:`qf.codec.Codec.alternatives`).

ik's row functions (ggml-quants.c of the commit in plugins/qf-ik/REFERENCE.md) are llama.cpp's, but their helpers
differ:

* ``make_qx_quants`` (Q4_0 and Q5_0 with an imatrix, Q3_K with an imatrix, Q6_K always): a second family of
  candidate scales and a one-quant-at-a-time refinement (qf.kernels.make_qx_quants_ik);
* ``quantize_row_iq4_nl_impl`` (IQ4_NL, IQ4_XS, with and without an imatrix): the index-table lookup
  ``best_index_iq4nl``, candidate scales from both ends of the table, then a one-quant-at-a-time refinement.

Byte-exact with ik's ``ggml_quantize_chunk`` built without FMA contraction (plugins/qf-ik/tests/
test_strategies_vs_ik.py).  ``x`` float32 ``(rows, n_per_row)``, ``imatrix`` float32 ``(n_per_row,)`` or empty,
``out`` uint8 ``(rows, row_bytes)``; float32 in C's order (see qf.kernels).
"""

from __future__ import annotations

import numpy as np

from qf.kernels import F32, best_index_sub_after, index_table, jit, make_qx_quants_ik, nearest_int, put_f16_at
from qf_plugins.quants._kquant_kernels import _q3k_finish, _q3k_put_scales, _q6k_finish, _q6k_scales

QK_K = 256
QK = 32
Q3_K_BYTES = 110
Q6_K_BYTES = 210
GROUP_MAX_EPS = F32(1e-15)
KVALUES_IQ4NL = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.int8)
IQ4NL_INDEX = index_table(KVALUES_IQ4NL)
N_INDEX = IQ4NL_INDEX.shape[0]


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
        sum_x2 = F32(0.0)
        for j in range(k):
            sum_x2 += xr[j] * xr[j]
        sigma2 = sum_x2 / F32(k)
        for ib in range(k // QK):
            xo = ib * QK
            for j in range(QK):
                weight[j] = imatrix[xo + j] * np.sqrt(sigma2 + xr[xo + j] * xr[xo + j])
            d = make_qx_quants_ik(QK, nmax, xr, xo, L, weight)
            o = ib * size
            put_f16_at(out[r], o, d)
            if nbits == 4:
                for j in range(16):
                    out[r, o + 2 + j] = L[j] | (L[j + 16] << 4)
            else:
                qh = 0
                for j in range(16):
                    out[r, o + 6 + j] = (L[j] & 0xF) | ((L[j + 16] & 0xF) << 4)
                    qh |= ((L[j] & 0x10) >> 4) << j
                    qh |= ((L[j + 16] & 0x10) >> 4) << (j + 16)
                for b in range(4):
                    out[r, o + 2 + b] = (qh >> (8 * b)) & 0xFF


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
