"""ik_llama.cpp's own quantizers for mainline types, where they write other bytes than llama.cpp's.

Q6_K: llama.cpp's algorithm, but with ik's ``make_qx_quants`` (ggml-quants.c: a second family of candidate scales
and a one-quant-at-a-time refinement), with or without an imatrix (the raw imatrix is the weight, as in llama.cpp).
"""

from __future__ import annotations

import numpy as np
from qf.kernels import F32, fp16_round, jit, make_qx_quants_ik, nearest_int, put_f16

QK_K = 256
Q6_K_BYTES = 210


@jit
def quantize_q6_k(x, imatrix, out):
    n, k = x.shape
    use_qw = imatrix.shape[0] > 0
    L = np.zeros(QK_K, np.int8)
    Lb = np.empty(16, np.int8)
    w = np.empty(16, np.float32)
    scales = np.empty(16, np.float32)
    for r in range(n):
        xr = x[r]
        for i in range(k // QK_K):
            xo = i * QK_K
            o = i * Q6_K_BYTES
            max_scale = F32(0.0)
            max_abs_scale = F32(0.0)
            for ib in range(16):
                for j in range(16):
                    v = xr[xo + 16 * ib + j]
                    w[j] = imatrix[xo + 16 * ib + j] if use_qw else v * v
                scale = make_qx_quants_ik(16, 32, xr, xo + 16 * ib, Lb, w)
                for j in range(16):
                    L[16 * ib + j] = Lb[j]
                scales[ib] = scale
                a = np.abs(scale)
                if a > max_abs_scale:
                    max_abs_scale = a
                    max_scale = scale
            if max_abs_scale < F32(1e-15):
                for b in range(Q6_K_BYTES):
                    out[r, o + b] = 0
                continue
            iscale = F32(-128.0) / max_scale
            dval = F32(1.0) / iscale
            put_f16(out, r, o + 208, dval)
            dh = fp16_round(dval)
            sc = np.empty(16, np.int64)
            for ib in range(16):
                sc[ib] = min(127, nearest_int(iscale * scales[ib]))
                out[r, o + 192 + ib] = sc[ib] & 0xFF
            for j in range(16):
                d = dh * F32(sc[j])
                if d == F32(0.0):
                    continue
                for ii in range(16):
                    lv = nearest_int(xr[xo + 16 * j + ii] / d)
                    lv = max(-32, min(31, lv))
                    L[16 * j + ii] = lv + 32
            for half in range(2):
                ql = o + 64 * half
                qh = o + 128 + 32 * half
                jb = 128 * half
                for l_ in range(32):
                    q1 = np.int64(L[jb + l_]) & 0xF
                    q2 = np.int64(L[jb + l_ + 32]) & 0xF
                    q3 = np.int64(L[jb + l_ + 64]) & 0xF
                    q4 = np.int64(L[jb + l_ + 96]) & 0xF
                    out[r, ql + l_] = q1 | (q3 << 4)
                    out[r, ql + l_ + 32] = q2 | (q4 << 4)
                    out[r, qh + l_] = ((np.int64(L[jb + l_]) >> 4) | ((np.int64(L[jb + l_ + 32]) >> 4) << 2)
                                       | ((np.int64(L[jb + l_ + 64]) >> 4) << 4)
                                       | ((np.int64(L[jb + l_ + 96]) >> 4) << 6))
