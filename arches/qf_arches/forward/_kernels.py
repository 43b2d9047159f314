"""numba kernels of the forward passes (the hot spots numpy does badly): causal attention and SwiGLU.

Arrays in, arrays out; float32 arithmetic.  Parallel over (sequence, head) pairs and rows.  ``fastmath`` lets LLVM
vectorize the dot products and exponentials (reassociated sums, as ggml's SIMD code has too): these kernels are
close to llama.cpp's numbers, not bit-identical to anything.  Compiled on first use (``cache=True``).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

F32 = np.float32


@nb.njit(cache=True, nogil=True, parallel=True, fastmath=True)
def causal_attention(q, k, v, scale, out):
    """out[s, t, h] = softmax_j≤t(q[s, t, h]·k[s, j, g] · scale) · v[s, j, g] with g = h // (H / Hkv).

    q (S, T, H, Dk), k (S, T, Hkv, Dk), v (S, T, Hkv, Dv), out (S, T, H, Dv); all float32, C-contiguous.
    """
    n_seqs, n_tokens, n_head, dk = q.shape
    n_head_kv = k.shape[2]
    dv = v.shape[3]
    group = n_head // n_head_kv
    for job in nb.prange(n_seqs * n_head):
        s = job // n_head
        h = job % n_head
        g = h // group
        scores = np.empty(n_tokens, np.float32)
        acc = np.empty(dv, np.float32)
        for t in range(n_tokens):
            best = -np.inf
            for j in range(t + 1):
                d = np.float32(0)
                for i in range(dk):
                    d += q[s, t, h, i] * k[s, j, g, i]
                d *= scale
                scores[j] = d
                if d > best:
                    best = d
            total = np.float32(0)
            for i in range(dv):
                acc[i] = 0
            for j in range(t + 1):
                e = np.float32(math.exp(scores[j] - best))
                total += e
                for i in range(dv):
                    acc[i] += e * v[s, j, g, i]
            for i in range(dv):
                out[s, t, h, i] = acc[i] / total


@nb.njit(cache=True, nogil=True, parallel=True, fastmath=True)
def swiglu(gate, up, out):
    """out = silu(gate) * up (float32, 2-D)."""
    for r in nb.prange(gate.shape[0]):
        for c in range(gate.shape[1]):
            x = gate[r, c]
            out[r, c] = x / (np.float32(1) + np.float32(math.exp(-x))) * up[r, c]
