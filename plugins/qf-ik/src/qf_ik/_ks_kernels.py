"""numba kernels for ik_llama.cpp's IQ2_KS and IQ3_KS: blocks of 32 whose 5-bit scales sit under one fp16 scale per
row (ik's row_meta_size = 2: the row starts with that fp16).

IQ2_KS reproduces ``quantize_row_iq2_ks_impl``: what ``ggml_quantize_chunk`` runs without user data, and what
``llama-quantize --slow-iq2ks`` (or any non-AVX2 build) writes.  ik's llama-quantize on AVX2 builds uses
``quantize_row_iq2_ks_fast_impl`` instead (another search, FMA intrinsics): not reproduced here.
"""

from __future__ import annotations

import numpy as np

from qf.kernels import F32, get_f16, jit, nearest_int, put_f16
from qf_ik._common import make_qx_quants_iqk, row_weights, std_max
from qf_ik._k_kernels import V2, V3, _bi, _bi2, _block_scale, _sumx2, _weights, iq2_block_search

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
                d, shifted, tiny = _block_scale(3, x, r, base, weight, 5, False, 8, 32)
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
                    i = _bi(3, off, idl * xv)
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
