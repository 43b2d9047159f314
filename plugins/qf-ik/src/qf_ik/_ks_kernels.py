"""numba kernels for ik_llama.cpp's IQ2_KS and IQ3_KS: blocks of 32 whose 5-bit scales sit under one fp16 scale per
row (ik's row_meta_size = 2: the row starts with that fp16).

IQ2_KS reproduces ``quantize_row_iq2_ks_impl``: what ``ggml_quantize_chunk`` runs without user data, and what
``llama-quantize --slow-iq2ks`` (or any non-AVX2 build) writes.  ik's llama-quantize on AVX2 builds uses
``quantize_row_iq2_ks_fast_impl`` instead (another search, FMA intrinsics): not reproduced here.
"""

from __future__ import annotations

import numpy as np
from qf.kernels import F32, get_f16, jit, nearest_int, put_f16

from qf_ik._common import get_f32, make_qx_quants_iqk, put_f32, row_weights, std_max
from qf_ik._k_kernels import V2, V3, V4, _bi2, _block_scale, _sumx2, _weights, bidx, iq2_block_search, tab3, tab4
from qf_ik._tables import IQ2KL_K_INDEX, IQ2KL_NEIGHBOURS, IQ2KL_VALUES, IQ3NL_VALUES

QK_K = 256
IQ2_KS_BYTES = 2 + 4 + 64
IQ3_KS_BYTES = 2 + 4 + 64 + 32


@jit
def quantize_iq2_ks(x, imatrix, out):
    n, k = x.shape
    nbl = k // QK_K
    nblk = k // 32
    use_qw = imatrix.shape[0] > 0
    qw = np.empty(k, np.float32)
    weight = np.empty(32, np.float32)
    scales = np.empty(nblk, np.float32)
    sw = np.empty(nblk, np.float32)
    Ls = np.empty(nblk, np.int8)
    order = np.empty(32, np.int64)
    sumx = np.empty(33, np.float32)
    sumw = np.empty(33, np.float32)
    for r in range(n):
        if use_qw:
            row_weights(x, r, imatrix, 32, qw)
        put_f16(out, r, 0, F32(0.0))
        for ibl in range(nbl):
            o = 2 + ibl * IQ2_KS_BYTES
            for b in range(IQ2_KS_BYTES):
                out[r, o + b] = 0
            xo = ibl * QK_K
            sigma2 = F32(1.5) * _sumx2(x, r, xo) / F32(256.0)
            extra = 0
            for ib in range(8):
                base = xo + 32 * ib
                _weights(x, r, base, qw, use_qw, sigma2, True, weight, 32)
                s = F32(0.0)
                amax = F32(0.0)
                for j in range(32):
                    s += weight[j]
                    amax = std_max(amax, np.abs(x[r, base + j]))
                sw[8 * ibl + ib] = s
                if amax < F32(1e-16):
                    scales[8 * ibl + ib] = F32(0.0)
                    continue
                d, shifted = iq2_block_search(x, r, base, weight, 32, 24, 8, order, sumx, sumw)
                scales[8 * ibl + ib] = d
                if shifted:
                    extra |= 1 << ib
            out[r, o] = extra & 0xFF
            out[r, o + 1] = extra >> 8
        d = make_qx_quants_iqk(nblk, 16, scales, Ls, sw)
        if d == F32(0.0):
            continue
        sumqx = F32(0.0)
        sumq2 = F32(0.0)
        for ibl in range(nbl):
            o = 2 + ibl * IQ2_KS_BYTES
            xo = ibl * QK_K
            sigma2 = F32(1.5) * _sumx2(x, r, xo) / F32(256.0)
            for ib in range(8):
                ls = np.int64(Ls[8 * ibl + ib])
                out[r, o + 2 + ib // 2] |= (ls & 0xF) << (4 * (ib % 2))
                out[r, o + 1] |= (ls >> 4) << ib  # extra bit 8 + ib
                ls -= 16
                dl = d * F32(ls)
                if dl != F32(0.0):
                    off = 4 if (out[r, o] >> ib) & 1 else 0
                    base = xo + 32 * ib
                    _weights(x, r, base, qw, use_qw, sigma2, True, weight, 32)
                    idl = F32(1.0) / dl
                    qs = o + 6 + 32 * (ib // 4)
                    for j in range(32):
                        xv = x[r, base + j]
                        ibest = _bi2(off, idl * xv)
                        out[r, qs + j] |= ibest << (2 * (ib % 4))
                        w = weight[j]
                        q = F32(np.int64(V2[off + ibest]) * ls)
                        sumqx += w * q * xv
                        sumq2 += w * q * q
        put_f16(out, r, 0, F32(1.030) * (sumqx / sumq2 if sumq2 > F32(0.0) else d))


@jit
def dequantize_iq2_ks(data, n_per_row, out):
    for r in range(data.shape[0]):
        d = get_f16(data, r, 0)
        for ibl in range(n_per_row // QK_K):
            o = 2 + ibl * IQ2_KS_BYTES
            extra = np.int64(data[r, o]) | (np.int64(data[r, o + 1]) << 8)
            for ib64 in range(4):
                sc = np.int64(data[r, o + 2 + ib64])
                e = extra >> (2 * ib64)
                dl1 = d * F32(((sc & 0xF) | ((e >> 4) & 0x10)) - 16)
                dl2 = d * F32(((sc >> 4) | ((e >> 5) & 0x10)) - 16)
                o1 = 4 if e & 1 else 0
                o2 = 4 if e & 2 else 0
                qs = o + 6 + 32 * (ib64 // 2)
                shift = 4 * (ib64 % 2)
                y = ibl * QK_K + 64 * ib64
                for j in range(32):
                    q = np.int64(data[r, qs + j])
                    out[r, y + j] = dl1 * V2[o1 + ((q >> shift) & 3)]
                    out[r, y + j + 32] = dl2 * V2[o2 + ((q >> (shift + 2)) & 3)]


@jit
def quantize_iq3_ks(x, imatrix, out):
    n, k = x.shape
    nbl = k // QK_K
    use_qw = imatrix.shape[0] > 0
    qw = np.empty(k, np.float32)
    weight = np.empty(32, np.float32)
    scales = np.empty(k // 32, np.float32)
    for r in range(n):
        if use_qw:
            row_weights(x, r, imatrix, 32, qw)
        amax_scale = F32(0.0)
        max_scale = F32(0.0)
        for ibl in range(nbl):
            o = 2 + ibl * IQ3_KS_BYTES
            for b in range(IQ3_KS_BYTES):
                out[r, o + b] = 0
            xo = ibl * QK_K
            sigma2 = _sumx2(x, r, xo) * (F32(2.0) / F32(256.0))
            for ib in range(8):
                base = xo + 32 * ib
                _weights(x, r, base, qw, use_qw, sigma2, False, weight, 32)
                d, shifted, tiny = _block_scale(tab3(), True, x, r, base, weight, 5, False, 8, 32)
                if tiny:
                    scales[8 * ibl + ib] = F32(0.0)
                    continue
                if shifted:
                    out[r, o + 1] |= 1 << ib  # extra bit 8 + ib
                scales[8 * ibl + ib] = d
                ad = np.abs(d)
                if ad > amax_scale:
                    amax_scale = ad
                    max_scale = d
        d = -max_scale / F32(16.0)
        put_f16(out, r, 0, d)
        if d == F32(0.0):
            continue
        inv = F32(1.0) / d
        sumqx = F32(0.0)
        sumq2 = F32(0.0)
        for ibl in range(nbl):
            o = 2 + ibl * IQ3_KS_BYTES
            xo = ibl * QK_K
            sigma2 = _sumx2(x, r, xo) * (F32(2.0) / F32(256.0))
            for ib in range(8):
                off = 8 if (out[r, o + 1] >> ib) & 1 else 0
                lv = nearest_int(inv * scales[8 * ibl + ib])
                lv = max(-16, min(15, lv))
                ul = lv + 16
                out[r, o + 2 + ib % 4] |= (ul & 0xF) << (4 * (ib // 4))
                out[r, o] |= (ul >> 4) << ib
                dl = d * F32(lv)
                idl = F32(1.0) / dl if dl != F32(0.0) else F32(0.0)
                base = xo + 32 * ib
                _weights(x, r, base, qw, use_qw, sigma2, False, weight, 32)
                qs = o + 6 + 32 * (ib // 4)
                qh = o + 70
                for j in range(32):
                    xv = x[r, base + j]
                    i = bidx(tab3(), off, idl * xv)
                    out[r, qs + j] |= (i & 3) << (2 * (ib % 4))
                    out[r, qh + j] |= (i >> 2) << (ib % 8)
                    w = weight[j]
                    q = F32(np.int64(V3[off + i]) * lv)
                    sumqx += w * q * xv
                    sumq2 += w * q * q
        if sumq2 > F32(0.0):
            put_f16(out, r, 0, sumqx / sumq2)


@jit
def dequantize_iq3_ks(data, n_per_row, out):
    dl = np.empty(8, np.float32)
    for r in range(data.shape[0]):
        d = get_f16(data, r, 0)
        for ibl in range(n_per_row // QK_K):
            o = 2 + ibl * IQ3_KS_BYTES
            extra = np.int64(data[r, o]) | (np.int64(data[r, o + 1]) << 8)
            for j in range(4):
                sc = np.int64(data[r, o + 2 + j])
                dl[j] = d * F32(((sc & 0xF) | (((extra >> j) & 1) << 4)) - 16)
                dl[j + 4] = d * F32(((sc >> 4) | (((extra >> (j + 4)) & 1) << 4)) - 16)
            for i128 in range(2):
                qs = o + 6 + 32 * i128
                for ib in range(4):
                    b = 4 * i128 + ib
                    off = 8 if (extra >> (8 + b)) & 1 else 0
                    y = ibl * QK_K + 32 * b
                    for j in range(32):
                        idx = ((np.int64(data[r, qs + j]) >> (2 * ib)) & 3) | (
                            ((np.int64(data[r, o + 70 + j]) >> b) & 1) << 2)
                        out[r, y + j] = dl[b] * V3[off + idx]


# ---------------------------------------------------------------------------------------------------------- IQ4_KSS
IQ4_KSS_BYTES = 128
FLT_MAX = F32(3.4028234663852886e38)


def _scramble_table() -> np.ndarray:
    """ik's ``scramble_table()``: table[i] = the first j with j ^ (j << 1) == i | parity(i) << 15."""
    j = np.arange(1 << 15, dtype=np.int64)
    v = j ^ (j << 1)
    i = v & 0x7FFF
    parity = np.array([bin(t).count("1") & 1 for t in range(1 << 15)], np.int64)
    ok = (v >> 15) == parity[i]
    table = np.full(1 << 15, -1, np.int64)
    for jj in j[ok][::-1]:  # the first j wins: assign in descending order so that smaller j overwrite
        table[i[jj]] = jj
    assert (table >= 0).all()
    return table.astype(np.uint16)


SCRAMBLE = _scramble_table()
_POP4 = np.array([bin(t).count("1") for t in range(16)], np.int64)


@jit
def _popcount16(v):
    return _POP4[v & 0xF] + _POP4[(v >> 4) & 0xF] + _POP4[(v >> 8) & 0xF] + _POP4[(v >> 12) & 0xF]


@jit
def _prune(v, off, xv, wv, dl):
    """ik's prune_iq4ks: make the 4 nibbles' total popcount even by moving one quant by ±1..2 (the cheapest in
    w·(Δ²)); the reference error uses the unshifted table whatever ``off`` is (as ik does)."""
    if _popcount16(v) % 2 == 0:
        return v
    best_score = FLT_MAX
    jbest = -1
    bestq = 0
    for j in range(4):
        q = (v >> (4 * j)) & 0xF
        pc = _POP4[q]
        diff0 = dl * V4[q] - xv[j]
        for iq in range(max(q - 2, 0), min(q + 2, 15) + 1):
            if iq == q:
                continue
            if abs(_POP4[iq] - pc) % 2:
                diff1 = dl * V4[off + iq] - xv[j]
                score = wv[j] * (diff1 * diff1 - diff0 * diff0)
                if score < best_score:
                    best_score = score
                    jbest = j
                    bestq = iq
    q4 = np.empty(4, np.int64)
    for j in range(4):
        q4[j] = (v >> (4 * j)) & 0xF
    q4[jbest] = bestq
    return q4[0] | (q4[1] << 4) | (q4[2] << 8) | (q4[3] << 12)


@jit
def _group(x, r, base, weight, k, xv, wv):
    xv[0] = x[r, base + 2 * k]
    xv[1] = x[r, base + 2 * k + 16]
    xv[2] = x[r, base + 2 * k + 1]
    xv[3] = x[r, base + 2 * k + 17]
    wv[0] = weight[2 * k]
    wv[1] = weight[2 * k + 16]
    wv[2] = weight[2 * k + 1]
    wv[3] = weight[2 * k + 17]


@jit
def _kss_try(x, r, base, weight, off, inv, xv, wv):
    """One candidate inverse scale: the pruned quants of both signs and their Σw·q·x, Σw·q²."""
    this_d = F32(1.0) / inv
    sqx_p = F32(0.0)
    sq2_p = F32(0.0)
    sqx_m = F32(0.0)
    sq2_m = F32(0.0)
    for k in range(8):
        _group(x, r, base, weight, k, xv, wv)
        vp = 0
        vm = 0
        for j in range(4):
            al = inv * xv[j]
            vp |= bidx(tab4(), off, al) << (4 * j)
            vm |= bidx(tab4(), off, -al) << (4 * j)
        vp = _prune(vp, off, xv, wv, this_d)
        vm = _prune(vm, off, xv, wv, this_d)
        for j in range(4):
            w = wv[j]
            q = V4[off + ((vp >> (4 * j)) & 0xF)]
            sqx_p += w * q * xv[j]
            sq2_p += w * q * q
            q = V4[off + ((vm >> (4 * j)) & 0xF)]
            sqx_m += w * q * xv[j]
            sq2_m += w * q * q
    return sqx_p, sq2_p, sqx_m, sq2_m


@jit
def quantize_iq4_kss(x, imatrix, out):
    n, k = x.shape
    nbl = k // QK_K
    use_qw = imatrix.shape[0] > 0
    qw = np.empty(k, np.float32)
    weight = np.empty(32, np.float32)
    scales = np.empty(k // 32, np.float32)
    xv = np.empty(4, np.float32)
    wv = np.empty(4, np.float32)
    vps = np.empty(8, np.int64)
    vms = np.empty(8, np.int64)
    for r in range(n):
        if use_qw:
            row_weights(x, r, imatrix, 32, qw)
        for b in range(4 + nbl * IQ4_KSS_BYTES):
            out[r, b] = 0
        amax_scale = F32(0.0)
        for ibl in range(nbl):
            xo = ibl * QK_K
            sigma2 = _sumx2(x, r, xo) * (F32(2.0) / F32(256.0))
            for ib in range(8):
                base = xo + 32 * ib
                _weights(x, r, base, qw, use_qw, sigma2, False, weight, 32)
                amax = F32(0.0)
                mx = F32(0.0)
                for j in range(32):
                    ax = np.abs(x[r, base + j])
                    if ax > amax:
                        amax = ax
                        mx = x[r, base + j]
                if amax < F32(1e-16):
                    scales[8 * ibl + ib] = F32(0.0)
                    continue
                best = F32(0.0)
                d = -mx / V4[0]
                for itry in range(-7, 8):
                    for off in (0, 16):
                        inv = (F32(itry) + V4[off]) / mx
                        sqx_p, sq2_p, sqx_m, sq2_m = _kss_try(x, r, base, weight, off, inv, xv, wv)
                        if sq2_p > F32(0.0) and sqx_p * sqx_p > best * sq2_p:
                            d = sqx_p / sq2_p
                            best = d * sqx_p
                        if sq2_m > F32(0.0) and sqx_m * sqx_m > best * sq2_m:
                            d = sqx_m / sq2_m
                            best = d * sqx_m
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
            xo = ibl * QK_K
            sigma2 = _sumx2(x, r, xo) * (F32(2.0) / F32(256.0))
            for ib in range(8):
                base = xo + 32 * ib
                _weights(x, r, base, qw, use_qw, sigma2, False, weight, 32)
                lv = nearest_int(F32(0.5) * (inv * scales[8 * ibl + ib] + F32(127.0)))
                lv = (max(0, min(127, lv)) << 1) - 127
                q16 = 4 + ibl * IQ4_KSS_BYTES + 16 * ib
                if lv != 0:
                    dl = d * F32(lv)
                    idl = F32(1.0) / dl
                    mse_p = F32(0.0)
                    mse_m = F32(0.0)
                    for kk in range(8):
                        _group(x, r, base, weight, kk, xv, wv)
                        vp = 0
                        vm = 0
                        for j in range(4):
                            al = idl * xv[j]
                            vp |= bidx(tab4(), 0, al) << (4 * j)
                            vm |= bidx(tab4(), 16, al) << (4 * j)
                        vp = _prune(vp, 0, xv, wv, dl)
                        vm = _prune(vm, 16, xv, wv, dl)
                        for j in range(4):
                            w = wv[j]
                            q = V4[(vp >> (4 * j)) & 0xF]
                            e = xv[j] - dl * q
                            mse_p += w * e * e
                            q = V4[16 + ((vm >> (4 * j)) & 0xF)]
                            e = xv[j] - dl * q
                            mse_m += w * e * e
                        vps[kk] = vp
                        vms[kk] = vm
                    use_m = mse_m < mse_p
                    off = 16 if use_m else 0
                    for kk in range(8):
                        _group(x, r, base, weight, kk, xv, wv)
                        v = vms[kk] if use_m else vps[kk]
                        for j in range(4):
                            q = F32(np.int64(V4[off + ((v >> (4 * j)) & 0xF)]) * lv)
                            sumqx += wv[j] * q * xv[j]
                            sumq2 += wv[j] * q * q
                    lv += 127
                    if use_m:
                        lv |= 1
                    for kk in range(8):
                        v = vms[kk] if use_m else vps[kk]
                        val = ((np.int64(SCRAMBLE[v & 0x7FFF]) << 1) | ((lv >> kk) & 1)) & 0xFFFF
                        out[r, q16 + 2 * kk] = val & 0xFF
                        out[r, q16 + 2 * kk + 1] = val >> 8
                else:
                    lv += 127
                    for kk in range(8):
                        out[r, q16 + 2 * kk] = (lv >> kk) & 1
                        out[r, q16 + 2 * kk + 1] = 0
        if sumq2 > F32(0.0):
            put_f32(out, r, 0, sumqx / sumq2 * F32(1.01))


@jit
def dequantize_iq4_kss(data, n_per_row, out):
    for r in range(data.shape[0]):
        d = get_f32(data, r, 0)
        for ibl in range(n_per_row // QK_K):
            for ib in range(8):
                q16 = 4 + ibl * IQ4_KSS_BYTES + 16 * ib
                ls = 0
                aux = np.empty(8, np.int64)
                for kk in range(8):
                    q = np.int64(data[r, q16 + 2 * kk]) | (np.int64(data[r, q16 + 2 * kk + 1]) << 8)
                    a = q & 0xFFFE
                    aux[kk] = (a ^ (a >> 1)) & 0xFFFF
                    ls |= (q & 1) << kk
                off = 16 if ls & 1 else 0
                dl = d * F32((ls & 254) - 127)
                y = ibl * QK_K + 32 * ib
                for j in range(16):
                    byte = (aux[j // 2] >> (8 * (j % 2))) & 0xFF
                    out[r, y + j] = dl * V4[off + (byte & 0xF)]
                    out[r, y + j + 16] = dl * V4[off + (byte >> 4)]


# ----------------------------------------------------------------------------------------------------------- IQ2_KL
IQ2_KL_BYTES = 2 + 4 + 64 + 16


def _kl_grid() -> np.ndarray:
    """grid[i] = (iq3nl_values[j // 8], iq3nl_values[j % 8]) for the 32 pairs j that k_index keeps."""
    grid = np.zeros((32, 2), np.float32)
    for j in range(64):
        i = int(IQ2KL_K_INDEX[j])
        if i >= 0:
            grid[i] = (IQ3NL_VALUES[j // 8], IQ3NL_VALUES[j % 8])
    return grid


KL_GRID = _kl_grid()
KL_INDEX = IQ2KL_K_INDEX.astype(np.int64)
KL_NEIGH = IQ2KL_NEIGHBOURS.astype(np.int64)


@jit
def _kl_index(inv, x1, x2, w1, w2):
    """ik's ``index`` lambda: the grid pair for (inv·x1, inv·x2), or the best of the 8 listed neighbours."""
    sx1 = inv * x1
    sx2 = inv * x2
    l1 = bidx(tab3(), 0, sx1)
    l2 = bidx(tab3(), 0, sx2)
    i = KL_INDEX[8 * l1 + l2]
    if i >= 0:
        return i
    best = FLT_MAX
    ibest = -1
    for t in range(8):
        nb = KL_NEIGH[-i - 1, t]
        diff1 = KL_GRID[nb, 0] - sx1
        diff2 = KL_GRID[nb, 1] - sx2
        score = w1 * diff1 * diff1 + w2 * diff2 * diff2
        if score < best:
            best = score
            ibest = nb
    return ibest


@jit
def _kl_weights(x, r, base, qw, use_qw, sigma2, weight):
    for j in range(32):
        xv = x[r, base + j]
        if use_qw:
            weight[j] = qw[base + j] * np.sqrt(sigma2 + xv * xv)
        else:
            weight[j] = np.abs(xv)


@jit
def _kl_sums(x, r, base, weight, inv):
    sqx_p = F32(0.0)
    sq2_p = F32(0.0)
    sqx_m = F32(0.0)
    sq2_m = F32(0.0)
    for j in range(0, 32, 2):
        w1 = weight[j]
        w2 = weight[j + 1]
        x1 = x[r, base + j]
        x2 = x[r, base + j + 1]
        idx = _kl_index(inv, x1, x2, w1, w2)
        q1 = KL_GRID[idx, 0]
        q2 = KL_GRID[idx, 1]
        sqx_p += w1 * q1 * x1 + w2 * q2 * x2
        sq2_p += w1 * q1 * q1 + w2 * q2 * q2
        idx = _kl_index(-inv, x1, x2, w1, w2)
        q1 = KL_GRID[idx, 0]
        q2 = KL_GRID[idx, 1]
        sqx_m += w1 * q1 * x1 + w2 * q2 * x2
        sq2_m += w1 * q1 * q1 + w2 * q2 * q2
    return sqx_p, sq2_p, sqx_m, sq2_m


@jit
def quantize_iq2_kl(x, imatrix, out):
    n, k = x.shape
    nbl = k // QK_K
    use_qw = imatrix.shape[0] > 0
    qw = np.empty(k, np.float32)
    weight = np.empty(32, np.float32)
    scales = np.empty(k // 32, np.float32)
    v0 = V3[0]
    for r in range(n):
        if use_qw:
            row_weights(x, r, imatrix, 32, qw)
        for b in range(2 + nbl * IQ2_KL_BYTES):
            out[r, b] = 0
        max_scale = F32(0.0)
        max_abs_scale = F32(0.0)
        for ibl in range(nbl):
            xo = ibl * QK_K
            sigma2 = _sumx2(x, r, xo) * (F32(2.25) / F32(256.0))
            for ib in range(8):
                base = xo + 32 * ib
                _kl_weights(x, r, base, qw, use_qw, sigma2, weight)
                amax = F32(0.0)
                mx = F32(0.0)
                for j in range(32):
                    ax = np.abs(x[r, base + j])
                    if ax > amax:
                        amax = ax
                        mx = x[r, base + j]
                if amax < F32(1e-16):
                    scales[8 * ibl + ib] = F32(0.0)
                    continue
                d = -mx / v0
                inv = F32(1.0) / d
                sqx_p, sq2_p, sqx_m, sq2_m = _kl_sums(x, r, base, weight, inv)
                d = sqx_p / sq2_p
                best = d * sqx_p
                if sq2_m > F32(0.0) and sqx_m * sqx_m > best * sq2_m:
                    d = sqx_m / sq2_m
                    best = d * sqx_m
                for itry in range(-5, 6):
                    inv = (F32(itry) + v0) / mx
                    sqx_p, sq2_p, sqx_m, sq2_m = _kl_sums(x, r, base, weight, inv)
                    if sq2_p > F32(0.0) and sqx_p * sqx_p > best * sq2_p:
                        d = sqx_p / sq2_p
                        best = d * sqx_p
                    if sq2_m > F32(0.0) and sqx_m * sqx_m > best * sq2_m:
                        d = sqx_m / sq2_m
                        best = d * sqx_m
                scales[8 * ibl + ib] = d
                ad = np.abs(d)
                if ad > max_abs_scale:
                    max_abs_scale = ad
                    max_scale = d
        if max_abs_scale == F32(0.0):
            continue
        d = -max_scale / F32(32.0)
        inv = F32(1.0) / d
        sumqx = F32(0.0)
        sumq2 = F32(0.0)
        for ibl in range(nbl):
            o = 2 + ibl * IQ2_KL_BYTES
            xo = ibl * QK_K
            sigma2 = _sumx2(x, r, xo) * (F32(2.25) / F32(256.0))
            for ib in range(8):
                base = xo + 32 * ib
                _kl_weights(x, r, base, qw, use_qw, sigma2, weight)
                ls = nearest_int(inv * scales[8 * ibl + ib])
                ls = max(-32, min(31, ls))
                best_score = FLT_MAX
                best_ls = ls
                for ils in range(max(-32, ls - 1), min(31, ls + 1) + 1):
                    dl = d * F32(ils)
                    idl = F32(1.0) / dl if dl != F32(0.0) else F32(0.0)
                    score = F32(0.0)
                    for j in range(16):
                        w1 = weight[2 * j]
                        w2 = weight[2 * j + 1]
                        x1 = x[r, base + 2 * j]
                        x2 = x[r, base + 2 * j + 1]
                        idx = _kl_index(idl, x1, x2, w1, w2)
                        diff1 = dl * KL_GRID[idx, 0] - x1
                        diff2 = dl * KL_GRID[idx, 1] - x2
                        score += w1 * diff1 * diff1 + w2 * diff2 * diff2
                    if score < best_score:
                        best_score = score
                        best_ls = ils
                ls = best_ls
                uls = ls + 32
                out[r, o + 2 + ib % 4] |= (uls & 0xF) << (4 * (ib // 4))
                out[r, o + ib // 4] |= (uls >> 4) << (2 * (ib % 4))  # scales_h bits 2·ib
                if ls == 0:
                    continue
                dl = d * F32(ls)
                idl = F32(1.0) / dl
                for j in range(16):
                    w1 = weight[2 * j]
                    w2 = weight[2 * j + 1]
                    x1 = x[r, base + 2 * j]
                    x2 = x[r, base + 2 * j + 1]
                    idx = _kl_index(idl, x1, x2, w1, w2)
                    out[r, o + 6 + 16 * (ib // 2) + j] |= (idx & 0xF) << (4 * (ib % 2))
                    out[r, o + 70 + j] |= (idx >> 4) << ib
                    q1 = F32(ls) * KL_GRID[idx, 0]
                    q2 = F32(ls) * KL_GRID[idx, 1]
                    sumqx += w1 * q1 * x1 + w2 * q2 * x2
                    sumq2 += w1 * q1 * q1 + w2 * q2 * q2
        if sumq2 > F32(0.0):
            d = sumqx / sumq2
        put_f16(out, r, 0, F32(1.025) * d)


KL_VALUES = np.stack([(IQ2KL_VALUES.astype(np.int64) & 0xFF).astype(np.int8),
                      (IQ2KL_VALUES.astype(np.int64) >> 8).astype(np.int8)], axis=1).astype(np.float32)


@jit
def dequantize_iq2_kl(data, n_per_row, out):
    for r in range(data.shape[0]):
        d = get_f16(data, r, 0)
        for ibl in range(n_per_row // QK_K):
            o = 2 + ibl * IQ2_KL_BYTES
            sh = np.int64(data[r, o]) | (np.int64(data[r, o + 1]) << 8)
            for ib64 in range(4):
                s1 = (np.int64(data[r, o + 2 + (2 * ib64) % 4]) >> (4 * (ib64 // 2))) & 0xF
                s2 = (np.int64(data[r, o + 2 + (2 * ib64 + 1) % 4]) >> (4 * (ib64 // 2))) & 0xF
                dl1 = d * F32((s1 | (((sh >> (4 * ib64)) & 3) << 4)) - 32)
                dl2 = d * F32((s2 | (((sh >> (4 * ib64 + 2)) & 3) << 4)) - 32)
                qs = o + 6 + 16 * ib64
                y = ibl * QK_K + 64 * ib64
                for j in range(16):
                    q = np.int64(data[r, qs + j])
                    h = np.int64(data[r, o + 70 + j])
                    i1 = (q & 0xF) | (((h >> (2 * ib64)) & 1) << 4)
                    i2 = (q >> 4) | (((h >> (2 * ib64 + 1)) & 1) << 4)
                    out[r, y + 2 * j] = dl1 * KL_VALUES[i1, 0]
                    out[r, y + 2 * j + 1] = dl1 * KL_VALUES[i1, 1]
                    out[r, y + 2 * j + 32] = dl2 * KL_VALUES[i2, 0]
                    out[r, y + 2 * j + 33] = dl2 * KL_VALUES[i2, 1]
