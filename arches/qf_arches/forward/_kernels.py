"""numba kernels of the forward passes (the hot spots numpy does badly): attention's masked softmax, SwiGLU and
the log-sum-exp of the perplexity (the matrix products go to BLAS).

Arrays in, arrays out; float32 arithmetic, parallel over rows.  ``fastmath`` lets LLVM vectorize the sums and
exponentials (reassociated, as ggml's SIMD code has too): these kernels are close to llama.cpp's numbers, not
bit-identical to anything.  Compiled on first use (``cache=True``).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

F32 = np.float32


@nb.njit(cache=True, nogil=True, fastmath=True, inline="always")
def exp_rows(x, n, bits):
    """x[:n] = exp(x[:n]), vectorizable: Cephes expf's polynomial on the reduced argument, 2**k put together in its
    exponent bits (``bits``: int32 scratch of >= n).  Arguments are clamped to [-87, 88]: relative error < 2e-7
    inside, ~1e-38 below, e**88 above."""
    scale = bits.view(np.float32)
    for j in range(n):
        v = min(max(x[j], np.float32(-87.0)), np.float32(88.0))
        k = np.float32(math.floor(v * np.float32(1.44269504088896341) + np.float32(0.5)))
        r = v - k * np.float32(0.693359375) + k * np.float32(2.12194440e-4)
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        x[j] = p * r * r + r + np.float32(1)
        bits[j] = (np.int32(k) + np.int32(127)) << np.int32(23)
    for j in range(n):
        x[j] *= scale[j]


@nb.njit(cache=True, nogil=True, parallel=True, fastmath=True)
def causal_attention(q, kt, v, scale, out):
    """out[s, t, h] = softmax_j≤t(q[s, t, h]·k[s, j, g] · scale) · v[s, j, g] with g = h // (H / Hkv).

    q (S, T, H, Dk); ``kt`` K transposed per KV head (S, Hkv, Dk, T); ``v`` (S, Hkv, T, Dv); out (S, T, H, Dv); all
    float32, C-contiguous.  The scores of a query are summed key-wise (axpy over contiguous keys, no horizontal sums).
    """
    n_seqs, n_tokens, n_head, dk = q.shape
    n_head_kv = kt.shape[1]
    dv = v.shape[3]
    group = n_head // n_head_kv
    for job in nb.prange(n_seqs * n_head):
        s = job // n_head
        h = job % n_head
        g = h // group
        scores = np.empty(n_tokens, np.float32)
        bits = np.empty(n_tokens, np.int32)
        acc = np.empty(dv, np.float32)
        for t in range(n_tokens):
            n = t + 1
            for j in range(n):
                scores[j] = 0
            for i in range(dk):
                qi = q[s, t, h, i] * scale
                kr = kt[s, g, i]
                for j in range(n):
                    scores[j] += qi * kr[j]
            best = -np.inf
            for j in range(n):
                best = max(best, scores[j])
            for j in range(n):
                scores[j] -= best
            exp_rows(scores, n, bits)
            total = np.float32(0)
            for j in range(n):
                total += scores[j]
            for i in range(dv):
                acc[i] = 0
            for j in range(n):
                e = scores[j]
                vr = v[s, g, j]
                for i in range(dv):
                    acc[i] += e * vr[i]
            inv = np.float32(1) / total
            for i in range(dv):
                out[s, t, h, i] = acc[i] * inv


@nb.njit(cache=True, nogil=True, parallel=True, fastmath=True)
def negative_log_likelihoods(logits, targets, out):
    """out[r] = log(Σ exp(logits[r] - max)) + max - logits[r, targets[r]] (float64), the terms of llama-imatrix's
    perplexity (float32 exponentials summed in double)."""
    n_vocab = logits.shape[1]
    for r in nb.prange(logits.shape[0]):
        row = logits[r]
        m = row[0]
        for j in range(1, n_vocab):
            m = max(m, row[j])
        e = np.empty(n_vocab, np.float32)
        bits = np.empty(n_vocab, np.int32)
        for j in range(n_vocab):
            e[j] = row[j] - m
        exp_rows(e, n_vocab, bits)
        total = 0.0
        for j in range(n_vocab):
            total += np.float64(e[j])
        out[r] = math.log(total) + np.float64(m) - np.float64(row[targets[r]])


@nb.njit(cache=True, nogil=True, parallel=True, fastmath=True)
def swiglu(gate, up, out):
    """out = silu(gate) * up = gate / (1 + exp(-gate)) * up (float32, 2-D)."""
    n = gate.shape[1]
    for r in nb.prange(gate.shape[0]):
        e = np.empty(n, np.float32)
        bits = np.empty(n, np.int32)
        for c in range(n):
            e[c] = -gate[r, c]
        exp_rows(e, n, bits)
        for c in range(n):
            out[r, c] = gate[r, c] / (np.float32(1) + e[c]) * up[r, c]
