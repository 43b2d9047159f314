"""numba kernels of the ``rtn`` strategy (one block per row of ``x``)."""

from __future__ import annotations

import numpy as np

from qf.kernels import F32, jit


@jit
def rtn_symmetric(x, qmin, qmax, d, q):
    """d maps the largest-magnitude value onto the longer end of [qmin, qmax]; q = round(x / d), clamped."""
    n, bs = x.shape
    far = qmin if -qmin >= qmax else qmax
    for b in range(n):
        amax = F32(0.0)
        mx = F32(0.0)
        for j in range(bs):
            if abs(x[b, j]) > amax:
                amax = abs(x[b, j])
                mx = x[b, j]
        scale = mx / F32(far)
        d[b] = scale
        inv = F32(1.0) / scale if scale != F32(0.0) else F32(0.0)
        for j in range(bs):
            q[b, j] = max(qmin, min(qmax, np.int64(np.rint(x[b, j] * inv))))


@jit
def rtn_asymmetric(x, qmax, d, m, q):
    """x ≈ d·q + m with m = block min, d = (max - min) / qmax."""
    n, bs = x.shape
    for b in range(n):
        mn = x[b, 0]
        mx = x[b, 0]
        for j in range(1, bs):
            mn = min(mn, x[b, j])
            mx = max(mx, x[b, j])
        scale = (mx - mn) / F32(qmax)
        d[b] = scale
        m[b] = mn
        inv = F32(1.0) / scale if scale != F32(0.0) else F32(0.0)
        for j in range(bs):
            q[b, j] = max(0, min(qmax, np.int64(np.rint((x[b, j] - mn) * inv))))


@jit
def rtn_table(x, table, d, q):
    """x ≈ d·T[q]: d maps the largest-magnitude value onto the table end of larger magnitude; nearest entry."""
    n, bs = x.shape
    nt = table.shape[0]
    far = table[0] if abs(table[0]) >= abs(table[nt - 1]) else table[nt - 1]
    for b in range(n):
        amax = F32(0.0)
        mx = F32(0.0)
        for j in range(bs):
            if abs(x[b, j]) > amax:
                amax = abs(x[b, j])
                mx = x[b, j]
        scale = mx / far
        d[b] = scale
        inv = F32(1.0) / scale if scale != F32(0.0) else F32(0.0)
        for j in range(bs):
            v = x[b, j] * inv
            best = 0
            err = abs(v - table[0])
            for t in range(1, nt):
                e = abs(v - table[t])
                if e < err:
                    err = e
                    best = t
            q[b, j] = best
