"""numba building blocks shared by the ``exhaustive`` and ``gradient`` strategies.

A block is ``x`` (float32, n values) with importance ``w``; the problems (see qf.model.BlockProblem):

* symmetric   x ≈ d·q,      q integer in [qmin, qmax]
* asymmetric  x ≈ d·q + m,  q integer in [0, qmax], m <= offset_max
* table       x ≈ d·T[q],   T ascending

For fixed quants the best scale (and offset) is a weighted least-squares fit, so a search only has to find quants:
for the symmetric and table problems it maximises F = (Σwxv)² / Σwv² (v = q or T[q]); the error is Σwx² − F.
Sums are float64: these searches need not reproduce any C code, only be deterministic.
"""

from __future__ import annotations

import numpy as np

from qf.kernels import jit, leaf, nearest_entry


@leaf
def block_sums(x, w, v):
    """(Σwxv, Σwv²) of a block for the quant values ``v`` (float64)."""
    s1 = 0.0
    s2 = 0.0
    for i in range(x.shape[0]):
        wv = np.float64(w[i]) * v[i]
        s1 += wv * x[i]
        s2 += wv * v[i]
    return s1, s2


@leaf
def fit_scale_offset(x, w, q, offset_max):
    """Weighted least squares x ≈ d·q + m for fixed integer quants, with m <= offset_max.  Returns (d, m, error)."""
    sw = 0.0
    sq = 0.0
    sqq = 0.0
    sx = 0.0
    sxq = 0.0
    sxx = 0.0
    for i in range(x.shape[0]):
        wi = np.float64(w[i])
        xi = np.float64(x[i])
        qi = np.float64(q[i])
        sw += wi
        sq += wi * qi
        sqq += wi * qi * qi
        sx += wi * xi
        sxq += wi * xi * qi
        sxx += wi * xi * xi
    return solve_scale_offset(sw, sq, sqq, sx, sxq, sxx, offset_max)


@jit
def solve_scale_offset(sw, sq, sqq, sx, sxq, sxx, offset_max):
    """The least-squares (d, m, error) from the weighted sums; m clamped to offset_max (then d refitted)."""
    det = sw * sqq - sq * sq
    if sw <= 0.0:
        return 0.0, 0.0, sxx
    if det <= 1e-30 * max(sw * sqq, 1e-300):  # all quants equal (c): x ≈ m, or d·c + offset_max when m can't reach
        mean = sx / sw
        if mean <= offset_max or sqq <= 0.0:
            m = min(mean, offset_max)
            return 0.0, m, max(sxx - 2.0 * m * sx + m * m * sw, 0.0)
        c = sq / sw
        d = (mean - offset_max) / c
        m = offset_max
        err = sxx - 2.0 * d * sxq - 2.0 * m * sx + d * d * sqq + 2.0 * d * m * sq + m * m * sw
        return d, m, max(err, 0.0)
    d = (sw * sxq - sq * sx) / det
    m = (sqq * sx - sq * sxq) / det
    if m > offset_max:
        m = offset_max
        d = (sxq - m * sq) / sqq if sqq > 0.0 else 0.0
    err = sxx - 2.0 * d * sxq - 2.0 * m * sx + d * d * sqq + 2.0 * d * m * sq + m * m * sw
    return d, m, max(err, 0.0)


@leaf
def table_error(x, w, d, table, q):
    """Σw(x − d·T[q])² with q the nearest entries for scale d (written to ``q``)."""
    inv = 1.0 / d if d != 0.0 else 0.0
    err = 0.0
    for i in range(x.shape[0]):
        q[i] = nearest_entry(np.float64(x[i]) * inv, table)
        r = np.float64(x[i]) - d * table[q[i]]
        err += np.float64(w[i]) * r * r
    return err


@leaf
def weighted_sq(x, w):
    s = 0.0
    for i in range(x.shape[0]):
        s += np.float64(w[i]) * np.float64(x[i]) * np.float64(x[i])
    return s


@jit
def polish_table(x, w, table, q, tmp):
    """Alternate nearest entries for d and the least-squares d for those entries while the error falls.
    Returns (d, error); ``q`` holds the matching entries."""
    vals = np.empty(x.shape[0])
    for i in range(x.shape[0]):
        vals[i] = table[q[i]]
    s1, s2 = block_sums(x, w, vals)
    sxx = weighted_sq(x, w)
    if s2 <= 0.0:
        return 0.0, sxx
    d = s1 / s2
    err = sxx - s1 * s1 / s2
    for _ in range(4):
        e2 = table_error(x, w, d, table, tmp)
        for i in range(x.shape[0]):
            vals[i] = table[tmp[i]]
        s1, s2 = block_sums(x, w, vals)
        if s2 <= 0.0:
            break
        e3 = sxx - s1 * s1 / s2
        if min(e2, e3) >= err * (1.0 - 1e-12):
            break
        q[:] = tmp
        if e3 <= e2:
            d = s1 / s2
            err = e3
        else:
            err = e2
    return d, err
