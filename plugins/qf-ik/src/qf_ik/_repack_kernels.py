"""The row-interleaved ``_R4`` layouts of ik_llama.cpp (``repack_*`` in iqk_quantize.cpp), as numba kernels.

Each repack takes 4 consecutive rows of the base type and interleaves them block by block: the 4 rows' bytes become
``nblock`` blocks of 4× the base block size (so the 4 output rows are one contiguous run, as in ik's files).  Every
output bit is one input bit or 0, so each repack is a bit permutation; its inverse (used to dequantize) is derived
once by probing the forward kernel bit by bit (:func:`unpack`).

The kernels take flat uint8 views: ``src``/``dst`` of ``nrows * row_bytes`` bytes.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from qf.kernels import jit

QK_K = 256


# ------------------------------------------------------------------------------------------ K family: helpers
@jit
def _extra_scales_iq4(src, xo, dst, yo, k, ib, kind):
    """extra bits and the 6-bit scales of one 32-block (IQ4_K / IQ5_K layout: scales_h[4] at 4, scales_l[8] at 8;
    r4: extra[8] at 8, scales_h[16] at 16, scales_l[32] at 32)."""
    extra = np.int64(src[xo + 2]) | (np.int64(src[xo + 3]) << 8)
    e = extra >> (2 * ib)
    if e & 1:
        dst[yo + 8 + k] |= 1 << ib
    if e & 2:
        dst[yo + 8 + k + 4] |= 1 << ib
    sl1 = src[xo + 8 + ib] & 0xF
    sl2 = src[xo + 8 + ib] >> 4
    sh = np.int64(src[xo + 4 + ib // 2]) >> (4 * (ib % 2))
    sh1 = sh & 3
    sh2 = (sh >> 2) & 3
    i = 8 * ib + k
    dst[yo + 32 + i % 32] |= sl1 << (4 * (i // 32))
    dst[yo + 16 + i % 16] |= sh1 << (2 * (i // 16))
    i += 4
    dst[yo + 32 + i % 32] |= sl2 << (4 * (i // 32))
    dst[yo + 16 + i % 16] |= sh2 << (2 * (i // 16))


@jit
def repack_iq4_k(src, dst, n_per_row, nrows):
    bs = 144
    nbl = n_per_row // QK_K
    rb = nbl * bs
    for row in range(0, nrows, 4):
        g = row * rb
        for ibl in range(nbl):
            yo = g + ibl * 4 * bs
            for b in range(8, 64):
                dst[yo + b] = 0
            for k in range(4):
                xo = g + k * rb + ibl * bs
                dst[yo + 2 * k] = src[xo]
                dst[yo + 2 * k + 1] = src[xo + 1]
                for ib in range(8):
                    _extra_scales_iq4(src, xo, dst, yo, k, ib, 4)
            for ib in range(8):
                for k in range(4):
                    xo = g + k * rb + ibl * bs + 16
                    for i in range(4):
                        q = yo + 64 + 64 * ib + 4 * k + i
                        a0 = src[xo + 16 * ib + i]
                        a8 = src[xo + 16 * ib + i + 8]
                        a4 = src[xo + 16 * ib + i + 4]
                        a12 = src[xo + 16 * ib + i + 12]
                        dst[q] = (a0 & 0xF) | ((a8 & 0x0F) << 4)
                        dst[q + 16] = (a0 >> 4) | (a8 & 0xF0)
                        dst[q + 32] = (a4 & 0xF) | ((a12 & 0x0F) << 4)
                        dst[q + 48] = (a4 >> 4) | (a12 & 0xF0)


@jit
def repack_iq5_k(src, dst, n_per_row, nrows):
    # block_iq5_k: d 0, extra 2, scales_h 4, scales_l 8, qs 16 (128), qh 144 (32) = 176
    # r4: d 0, extra 8, scales_h 16, scales_l 32, qs 64 (512), qh 576 (128)
    bs = 176
    nbl = n_per_row // QK_K
    rb = nbl * bs
    L = np.empty(QK_K, np.uint8)
    for row in range(0, nrows, 4):
        g = row * rb
        for ibl in range(nbl):
            yo = g + ibl * 4 * bs
            for b in range(8, 64):
                dst[yo + b] = 0
            for k in range(4):
                xo = g + k * rb + ibl * bs
                dst[yo + 2 * k] = src[xo]
                dst[yo + 2 * k + 1] = src[xo + 1]
                shift = 0
                for ib64 in range(4):
                    qs = xo + 16 + 32 * ib64
                    qh = xo + 144
                    for j in range(16):
                        L[64 * ib64 + j] = (src[qs + j] & 0xF) | (((src[qh + j] >> shift) & 1) << 4)
                        L[64 * ib64 + j + 16] = (src[qs + j + 16] & 0xF) | (((src[qh + j + 16] >> shift) & 1) << 4)
                        L[64 * ib64 + j + 32] = (src[qs + j] >> 4) | (((src[qh + j] >> shift) & 2) << 3)
                        L[64 * ib64 + j + 48] = (src[qs + j + 16] >> 4) | (((src[qh + j + 16] >> shift) & 2) << 3)
                    shift += 2
                for ib in range(8):
                    _extra_scales_iq4(src, xo, dst, yo, k, ib, 5)
                    for i in range(4):
                        q = yo + 64 + 64 * ib + 4 * k + i
                        b = 32 * ib + i
                        dst[q] = (L[b] & 0xF) | ((L[b + 8] & 0xF) << 4)
                        dst[q + 16] = (L[b + 16] & 0xF) | ((L[b + 24] & 0xF) << 4)
                        dst[q + 32] = (L[b + 4] & 0xF) | ((L[b + 12] & 0xF) << 4)
                        dst[q + 48] = (L[b + 20] & 0xF) | ((L[b + 28] & 0xF) << 4)
                        dst[yo + 576 + 16 * ib + 4 * k + i] = (
                            ((L[b] >> 4) << 0) | ((L[b + 8] >> 4) << 1) | ((L[b + 16] >> 4) << 2)
                            | ((L[b + 24] >> 4) << 3) | ((L[b + 4] >> 4) << 4) | ((L[b + 12] >> 4) << 5)
                            | ((L[b + 20] >> 4) << 6) | ((L[b + 28] >> 4) << 7))


@jit
def repack_iq3_k(src, dst, n_per_row, nrows):
    # block_iq3_k: d 0, extra 2, scales_h 4 (u16), scales_l 6 (8), qs 14 (64), qh 78 (32) = 110
    # r4: d 0, extra 8, scales_h 16 (8), scales_l 24 (32), qs 56 (256), qh 312 (128)
    bs = 110
    nbl = n_per_row // QK_K
    rb = nbl * bs
    L = np.empty(QK_K, np.uint8)
    for row in range(0, nrows, 4):
        g = row * rb
        for ibl in range(nbl):
            yo = g + ibl * 4 * bs
            for b in range(8, 56):
                dst[yo + b] = 0
            for k in range(4):
                xo = g + k * rb + ibl * bs
                dst[yo + 2 * k] = src[xo]
                dst[yo + 2 * k + 1] = src[xo + 1]
                extra = np.int64(src[xo + 2]) | (np.int64(src[xo + 3]) << 8)
                sh = np.int64(src[xo + 4]) | (np.int64(src[xo + 5]) << 8)
                for ib32 in range(8):
                    sl_ = 2 * (ib32 % 4)
                    qs = xo + 14 + 32 * (ib32 // 4)
                    qh = xo + 78
                    for j in range(16):
                        L[32 * ib32 + j] = ((src[qs + j] >> sl_) & 3) | (((src[qh + j] >> ib32) & 1) << 2)
                        L[32 * ib32 + j + 16] = (((src[qs + j + 16] >> sl_) & 3)
                                                 | (((src[qh + j + 16] >> ib32) & 1) << 2))
                for ib in range(8):
                    e = extra >> (2 * ib)
                    if e & 1:
                        dst[yo + 8 + k] |= 1 << ib
                    if e & 2:
                        dst[yo + 8 + k + 4] |= 1 << ib
                    sl1 = src[xo + 6 + ib] & 0xF
                    sl2 = src[xo + 6 + ib] >> 4
                    s = sh >> (2 * ib)
                    i = 8 * ib + k
                    dst[yo + 24 + i % 32] |= sl1 << (4 * (i // 32))
                    dst[yo + 16 + i % 8] |= (s & 1) << (i // 8)
                    i += 4
                    dst[yo + 24 + i % 32] |= sl2 << (4 * (i // 32))
                    dst[yo + 16 + i % 8] |= ((s >> 1) & 1) << (i // 8)
                    for i in range(4):
                        b = 32 * ib + i
                        q = yo + 56 + 32 * ib + 4 * k + i
                        dst[q] = ((L[b] & 3) | ((L[b + 4] & 3) << 2) | ((L[b + 8] & 3) << 4) | ((L[b + 12] & 3) << 6))
                        dst[q + 16] = ((L[b + 16] & 3) | ((L[b + 20] & 3) << 2) | ((L[b + 24] & 3) << 4)
                                       | ((L[b + 28] & 3) << 6))
                        dst[yo + 312 + 16 * ib + 4 * k + i] = (
                            ((L[b] >> 2) << 0) | ((L[b + 4] >> 2) << 1) | ((L[b + 8] >> 2) << 2)
                            | ((L[b + 12] >> 2) << 3) | ((L[b + 16] >> 2) << 4) | ((L[b + 20] >> 2) << 5)
                            | ((L[b + 24] >> 2) << 6) | ((L[b + 28] >> 2) << 7))


@jit
def repack_iq2_k(src, dst, n_per_row, nrows):
    # block_iq2_k: d 0, extra 2, scales 4 (8), qs 12 (64) = 76; r4: d 0, extra 8, scales 16 (32), qs 48 (256)
    bs = 76
    nbl = n_per_row // QK_K
    rb = nbl * bs
    L = np.empty(QK_K, np.uint8)
    for row in range(0, nrows, 4):
        g = row * rb
        for ibl in range(nbl):
            yo = g + ibl * 4 * bs
            for b in range(8, 48):
                dst[yo + b] = 0
            for k in range(4):
                xo = g + k * rb + ibl * bs
                dst[yo + 2 * k] = src[xo]
                dst[yo + 2 * k + 1] = src[xo + 1]
                extra = np.int64(src[xo + 2]) | (np.int64(src[xo + 3]) << 8)
                for ib32 in range(8):
                    sl_ = 2 * (ib32 % 4)
                    qs = xo + 12 + 32 * (ib32 // 4)
                    for j in range(16):
                        L[32 * ib32 + j] = (src[qs + j] >> sl_) & 3
                        L[32 * ib32 + j + 16] = (src[qs + j + 16] >> sl_) & 3
                for ib in range(8):
                    e = extra >> (2 * ib)
                    if e & 1:
                        dst[yo + 8 + k] |= 1 << ib
                    if e & 2:
                        dst[yo + 8 + k + 4] |= 1 << ib
                    sl1 = src[xo + 4 + ib] & 0xF
                    sl2 = src[xo + 4 + ib] >> 4
                    i = 8 * ib + k
                    dst[yo + 16 + i % 32] |= sl1 << (4 * (i // 32))
                    i += 4
                    dst[yo + 16 + i % 32] |= sl2 << (4 * (i // 32))
                    for i in range(4):
                        b = 32 * ib + i
                        q = yo + 48 + 32 * ib + 4 * k + i
                        dst[q] = ((L[b] & 3) | ((L[b + 4] & 3) << 2) | ((L[b + 8] & 3) << 4) | ((L[b + 12] & 3) << 6))
                        dst[q + 16] = ((L[b + 16] & 3) | ((L[b + 20] & 3) << 2) | ((L[b + 24] & 3) << 4)
                                       | ((L[b + 28] & 3) << 6))


@jit
def repack_q6_0(src, dst, n_per_row, nrows):
    # block_q6_0: d 0, qh 2 (8), qs 10 (16) = 26; r4: d[4] 0, qh 8 (32), qs 40 (64) = 104
    bs = 26
    nb = n_per_row // 32
    rb = nb * bs
    L = np.empty(32, np.uint8)
    for row in range(0, nrows, 4):
        g = row * rb
        for ib in range(nb):
            yo = g + ib * 4 * bs
            for b in range(8, 40):
                dst[yo + b] = 0
            for k in range(4):
                xo = g + k * rb + ib * bs
                dst[yo + 2 * k] = src[xo]
                dst[yo + 2 * k + 1] = src[xo + 1]
                for j in range(16):
                    h = src[xo + 2 + j % 8] >> (4 * (j // 8))
                    L[j] = (src[xo + 10 + j] & 0x0F) | ((h << 4) & 0x30)
                    L[j + 16] = (src[xo + 10 + j] >> 4) | ((h << 2) & 0x30)
                for l_ in range(4):
                    l1 = 4 * (l_ // 2) + 16 * (l_ % 2)
                    l2 = l1 + 8
                    for i in range(4):
                        dst[yo + 40 + 4 * k + i + 16 * l_] = (L[i + l1] & 0xF) | ((L[i + l2] & 0xF) << 4)
                        dst[yo + 8 + 4 * k + i + 16 * (l_ % 2)] |= (
                            ((L[i + l1] >> 4) | ((L[i + l2] >> 4) << 4)) << (2 * (l_ // 2)))


@jit
def _ks_meta(src, dst, g, rb):
    for k in range(4):
        for t in range(4):
            dst[g + 4 * k + t] = src[g + k * rb + t]


@jit
def repack_iq4_ks(src, dst, n_per_row, nrows):
    # rows: float d, then block_iq4_ks (scales 8, qs 128) = 136; r4: float d[4], then scales 32, qs 512
    bs = 136
    nbl = n_per_row // QK_K
    rb = 4 + nbl * bs
    for row in range(0, nrows, 4):
        g = row * rb
        _ks_meta(src, dst, g, rb)
        for ibl in range(nbl):
            yo = g + 16 + ibl * 4 * bs
            for k in range(4):
                xo = g + k * rb + 4 + ibl * bs
                for ib in range(8):
                    dst[yo + 4 * ib + k] = src[xo + ib]
                    for i in range(4):
                        q = yo + 32 + 64 * ib + 4 * k + i
                        a0 = src[xo + 8 + 16 * ib + i]
                        a8 = src[xo + 8 + 16 * ib + i + 8]
                        a4 = src[xo + 8 + 16 * ib + i + 4]
                        a12 = src[xo + 8 + 16 * ib + i + 12]
                        dst[q] = (a0 & 0xF) | ((a8 & 0x0F) << 4)
                        dst[q + 16] = (a0 >> 4) | (a8 & 0xF0)
                        dst[q + 32] = (a4 & 0xF) | ((a12 & 0x0F) << 4)
                        dst[q + 48] = (a4 >> 4) | (a12 & 0xF0)


@jit
def repack_iq5_ks(src, dst, n_per_row, nrows):
    # rows: float d, then block_iq5_ks (scales 8, qs 128, qh 32) = 168; r4: float d[4], scales 32, qs 512, qh 128
    bs = 168
    nbl = n_per_row // QK_K
    rb = 4 + nbl * bs
    L = np.empty(QK_K, np.uint8)
    for row in range(0, nrows, 4):
        g = row * rb
        _ks_meta(src, dst, g, rb)
        for ibl in range(nbl):
            yo = g + 16 + ibl * 4 * bs
            for k in range(4):
                xo = g + k * rb + 4 + ibl * bs
                for ib64 in range(4):
                    qs = xo + 8 + 32 * ib64
                    qh = xo + 136
                    shift = 2 * ib64
                    for j in range(16):
                        L[64 * ib64 + j] = (src[qs + j] & 0xF) | (((src[qh + j] >> shift) & 1) << 4)
                        L[64 * ib64 + j + 16] = (src[qs + j + 16] & 0xF) | (((src[qh + j + 16] >> shift) & 1) << 4)
                        L[64 * ib64 + j + 32] = (src[qs + j] >> 4) | (((src[qh + j] >> shift) & 2) << 3)
                        L[64 * ib64 + j + 48] = (src[qs + j + 16] >> 4) | (((src[qh + j + 16] >> shift) & 2) << 3)
                for ib in range(8):
                    dst[yo + 4 * ib + k] = src[xo + ib]
                    for i in range(4):
                        q = yo + 32 + 64 * ib + 4 * k + i
                        b = 32 * ib + i
                        dst[q] = (L[b] & 0xF) | ((L[b + 8] & 0xF) << 4)
                        dst[q + 16] = (L[b + 16] & 0xF) | ((L[b + 24] & 0xF) << 4)
                        dst[q + 32] = (L[b + 4] & 0xF) | ((L[b + 12] & 0xF) << 4)
                        dst[q + 48] = (L[b + 20] & 0xF) | ((L[b + 28] & 0xF) << 4)
                        dst[yo + 544 + 16 * ib + 4 * k + i] = (
                            ((L[b] >> 4) << 0) | ((L[b + 8] >> 4) << 1) | ((L[b + 16] >> 4) << 2)
                            | ((L[b + 24] >> 4) << 3) | ((L[b + 4] >> 4) << 4) | ((L[b + 12] >> 4) << 5)
                            | ((L[b + 20] >> 4) << 6) | ((L[b + 28] >> 4) << 7))


# base type: (kernel, block size, bytes per block, bytes of row header)
REPACKS = {"IQ2_K": (repack_iq2_k, 256, 76, 0), "IQ3_K": (repack_iq3_k, 256, 110, 0),
           "IQ4_K": (repack_iq4_k, 256, 144, 0), "IQ5_K": (repack_iq5_k, 256, 176, 0), "Q6_0": (repack_q6_0, 32, 26, 0),
           "IQ4_KS": (repack_iq4_ks, 256, 136, 4), "IQ5_KS": (repack_iq5_ks, 256, 168, 4)}


@cache
def bit_map(base: str) -> np.ndarray:
    """For one group of 4 one-block rows: ``m[b]`` = the input bit that output bit ``b`` comes from.  Probes the
    forward kernel with one bit set at a time; checks that it is a permutation."""
    kernel, block, bs, meta = REPACKS[base]
    nbytes = 4 * (meta + bs)
    src = np.zeros(nbytes, np.uint8)
    dst = np.zeros(nbytes, np.uint8)
    m = np.full(nbytes * 8, -1, np.int64)
    for b in range(nbytes * 8):
        src[:] = 0
        src[b // 8] = 1 << (b % 8)
        kernel(src, dst, block, 4)
        hits = np.nonzero(np.unpackbits(dst, bitorder="little"))[0]
        if len(hits) != 1 or m[hits[0]] != -1:
            raise AssertionError(f"{base}: repack is not a bit permutation at input bit {b}")
        m[hits[0]] = b
    return m


@jit
def _unpack(data, out, n_per_row, nrows, block, bs, meta, inv):
    """Inverse repack: ``inv[b]`` is the output bit that input bit ``b`` went to, in the one-block layout (the row
    headers map as they are, block ibl adds ibl·4·bs on the output side)."""
    nbl = n_per_row // block
    rb = meta + nbl * bs
    for row in range(0, nrows, 4):
        g = row * rb
        for k in range(4):
            for p in range(rb):
                if p < meta:
                    local = k * (meta + bs) + p
                    shift = 0
                else:
                    ibl = (p - meta) // bs
                    local = k * (meta + bs) + meta + (p - meta) % bs
                    shift = ibl * 4 * bs * 8
                v = 0
                for t in range(8):
                    ob = inv[local * 8 + t] + shift
                    v |= ((np.int64(data[g + (ob >> 3)]) >> (ob & 7)) & 1) << t
                out[g + k * rb + p] = v


def unpack(base: str, data: np.ndarray, n_per_row: int) -> np.ndarray:
    """Rows of an ``_R4`` type back to the base type's rows."""
    _, block, bs, meta = REPACKS[base]
    m = bit_map(base)
    inv = np.empty_like(m)
    inv[m] = np.arange(len(m))
    out = np.empty_like(data)
    _unpack(data.reshape(-1), out.reshape(-1), n_per_row, data.shape[0], block, bs, meta, inv)
    return out


def repack(base: str, plain: np.ndarray, n_per_row: int) -> np.ndarray:
    kernel = REPACKS[base][0]
    out = np.empty_like(plain)
    kernel(plain.reshape(-1), out.reshape(-1), n_per_row, plain.shape[0])
    return out
