"""numba kernels of the ``exhaustive`` strategy: the cumulative breakpoint search (compilade, llama.cpp PR 12557).

For an inverse scale t > 0 every element's quant is the table entry nearest x·t (integer quants are the table
[qmin, qmax], where that is round(x·t)).  As t grows, the
quants change one step at a time at known breakpoints; walking the breakpoints in order while updating Σwxv and
Σwv² in O(1) visits every distinct rounding of the block, so the best F = (Σwxv)²/Σwv² among them is the exact
optimum over all scales.  Negative scales are the same walk on −x.  For the asymmetric problem the walk runs on
x − m for a fixed offset m, and the offset is refitted by least squares in turn until the quants stop changing.
"""

from __future__ import annotations

import numpy as np

from qf.numerics import jit
from qf_plugins.strategies._block_kernels import fit_scale_offset, polish_table, weighted_sq

#: offsets the alternation starts from: the block minimum raised by these fractions of a quant step
STARTS = (0.0, 0.25, 0.5)
#: relative slack under which two values of F count as equal
TIE = 1.0 - 1e-12


@jit
def _integer_table(qmin, qmax):
    """The integer quants [qmin, qmax] as a table (x ≈ d·q is x ≈ d·T[q − qmin]) and the index of 0."""
    return np.arange(qmin, qmax + 1).astype(np.float64), -qmin


@jit
def symmetric(x, w, qmin, qmax, d, q):
    """Exact optimum of x ≈ d·q per block (rows of x)."""
    nbl, n = x.shape
    lin, z = _integer_table(qmin, qmax)
    ev_t = np.empty(n * lin.shape[0])
    ev_i = np.empty(n * lin.shape[0], np.int64)
    ev_s = np.empty(n * lin.shape[0], np.int64)
    cur = np.empty(n, np.int64)
    qa = np.empty(n, np.int64)
    qb = np.empty(n, np.int64)
    for b in range(nbl):
        xb = x[b]
        wb = w[b]
        fa = _walk_table(xb, wb, 1.0, lin, z, ev_t, ev_i, ev_s, cur, qa)
        fb = _walk_table(xb, wb, -1.0, lin, z, ev_t, ev_i, ev_s, cur, qb)
        if fb > fa:
            qa[:] = qb
        s1 = 0.0
        s2 = 0.0
        for i in range(n):
            qa[i] += qmin
            s1 += np.float64(wb[i]) * np.float64(xb[i]) * qa[i]
            s2 += np.float64(wb[i]) * qa[i] * qa[i]
        d[b] = s1 / s2 if s2 > 0.0 else 0.0
        for i in range(n):
            q[b, i] = qa[i]


@jit
def _alternate(xb, wb, off, lin, offset_max, ev_t, ev_i, ev_s, cur, qc, y, qbest, best):
    """From offset ``off``: exact best quants for the offset, offset refitted, until stable.  Updates ``qbest`` and
    returns (error, d, m) when it beats ``best`` = (error, d, m).  ``lin`` is the integer table [0, qmax]."""
    n = xb.shape[0]
    best_err, bd, bm = best
    for _ in range(6):
        for i in range(n):
            y[i] = np.float32(np.float64(xb[i]) - off)
        _walk_table(y, wb, 1.0, lin, 0, ev_t, ev_i, ev_s, cur, qc)
        dd, mm, err = fit_scale_offset(xb, wb, qc, offset_max)
        if dd < 0.0:
            break
        if err < best_err:
            best_err = err
            bd = dd
            bm = mm
            qbest[:] = qc
        if mm == off:
            break
        off = mm
    return best_err, bd, bm


@jit
def asymmetric(x, w, qmax, offset_max, d, m, q):
    """x ≈ d·q + m: alternate exact quants for an offset and the least-squares offset, from a few starting
    offsets (the block minimum raised by fractions of a quant step)."""
    nbl, n = x.shape
    lin, _ = _integer_table(0, qmax)
    ev_t = np.empty(n * lin.shape[0])
    ev_i = np.empty(n * lin.shape[0], np.int64)
    ev_s = np.empty(n * lin.shape[0], np.int64)
    cur = np.empty(n, np.int64)
    qc = np.empty(n, np.int64)
    qbest = np.empty(n, np.int64)
    y = np.empty(n, np.float32)
    for b in range(nbl):
        xb = x[b]
        wb = w[b]
        lo = np.float64(xb[0])
        hi = np.float64(xb[0])
        for i in range(n):
            lo = min(lo, np.float64(xb[i]))
            hi = max(hi, np.float64(xb[i]))
        for i in range(n):
            qbest[i] = 0
        best = (weighted_sq(xb, wb) * 4.0 + 1.0, 0.0, 0.0)
        for frac in STARTS:
            off = min(lo + frac * (hi - lo) / qmax, offset_max)
            best = _alternate(xb, wb, off, lin, offset_max, ev_t, ev_i, ev_s, cur, qc, y, qbest, best)
        d[b] = best[1]
        m[b] = best[2]
        for i in range(n):
            q[b, i] = qbest[i]


@jit
def _walk_table(x, w, sign, table, z, ev_t, ev_i, ev_s, cur, q):
    """Best nearest-entry assignment of sign·x ≈ d·T[q] (d > 0) over all scales, walking from index ``z`` (the entry
    nearest 0); returns F (−1 if none) and writes the table indices to q.  An integer table gives x ≈ d·q."""
    n = x.shape[0]
    nt = table.shape[0]
    ne = 0
    s1 = 0.0
    s2 = 0.0
    for i in range(n):
        cur[i] = z
        xi = sign * np.float64(x[i])
        wi = np.float64(w[i])
        s1 += wi * xi * table[z]
        s2 += wi * table[z] * table[z]
        if xi > 0.0:
            for k in range(z, nt - 1):
                mid = 0.5 * (table[k] + table[k + 1])
                if mid > 0.0:
                    ev_t[ne] = mid / xi
                    ev_i[ne] = i
                    ev_s[ne] = 1
                    ne += 1
        elif xi < 0.0:
            for k in range(z, 0, -1):
                mid = 0.5 * (table[k - 1] + table[k])
                if mid < 0.0:
                    ev_t[ne] = mid / xi
                    ev_i[ne] = i
                    ev_s[ne] = -1
                    ne += 1
    order = np.argsort(ev_t[:ne], kind="mergesort")
    best = s1 * s1 / s2 if s2 > 0.0 and s1 > 0.0 else -1.0
    best_k = 0
    k = 0
    while k < ne:
        t = ev_t[order[k]]
        while k < ne and ev_t[order[k]] == t:
            e = order[k]
            i = ev_i[e]
            xi = sign * np.float64(x[i])
            wi = np.float64(w[i])
            old = table[cur[i]]
            cur[i] += ev_s[e]
            new = table[cur[i]]
            s1 += wi * xi * (new - old)
            s2 += wi * (new * new - old * old)
            k += 1
        if s2 > 0.0 and s1 > 0.0:
            f = s1 * s1 / s2
            if f >= best * TIE:  # ties go to the later breakpoint: the smaller scale packs better
                best = f
                best_k = k
    for i in range(n):
        q[i] = z
    for j in range(best_k):
        e = order[j]
        q[ev_i[e]] += ev_s[e]
    return best


@jit
def table(x, w, tab, d, q):
    """Exact optimum of x ≈ d·T[q] per block over every scale of either sign."""
    nbl, n = x.shape
    nt = tab.shape[0]
    t64 = tab.astype(np.float64)
    z = 0
    for k in range(nt):
        if abs(t64[k]) < abs(t64[z]):
            z = k
    ev_t = np.empty(n * nt)
    ev_i = np.empty(n * nt, np.int64)
    ev_s = np.empty(n * nt, np.int64)
    cur = np.empty(n, np.int64)
    qa = np.empty(n, np.int64)
    qb = np.empty(n, np.int64)
    tmp = np.empty(n, np.int64)
    for b in range(nbl):
        xb = x[b]
        wb = w[b]
        fa = _walk_table(xb, wb, 1.0, t64, z, ev_t, ev_i, ev_s, cur, qa)
        fb = _walk_table(xb, wb, -1.0, t64, z, ev_t, ev_i, ev_s, cur, qb)
        if fb > fa:
            qa[:] = qb
        if max(fa, fb) <= 0.0:
            d[b] = 0.0
            for i in range(n):
                q[b, i] = z
            continue
        dd, _ = polish_table(xb, wb, t64, qa, tmp)
        d[b] = dd
        for i in range(n):
            q[b, i] = qa[i]
