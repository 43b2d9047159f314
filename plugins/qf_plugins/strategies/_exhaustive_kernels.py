"""numba kernels of the ``exhaustive`` strategy: the cumulative breakpoint search (compilade, llama.cpp PR 12557).

For an inverse scale t > 0 every element's quant is the table entry nearest x·t (integer quants are the table [qmin,
qmax], where that is round(x·t)).  As t grows, the quants change one step at a time at known breakpoints; walking the
breakpoints in order while updating Σwxv and Σwv² in O(1) visits every distinct rounding of the block, so the best F
= (Σwxv)²/Σwv² among them is the exact optimum over all scales.  Negative scales are the same walk on −x.  Each
element's breakpoints come in increasing order, so the walk merges them with a winner tree of one pending breakpoint
per element (O(n) memory, O(log n) a step: a replay of the changed leaf's matches, one comparison a level).  For the
asymmetric problem the walk runs on x − m for a fixed offset m, and the offset is refitted by least squares in turn
until the quants stop changing.
"""

from __future__ import annotations

import numpy as np

from qf.numerics import jit, leaf
from qf_plugins.strategies._block_kernels import fit_scale_offset, polish_table, weighted_sq

#: offsets the alternation starts from: the block minimum raised by these fractions of a quant step
STARTS = (0.0, 0.5)
#: relative slack under which two values of F count as equal
TIE = 1.0 - 1e-12
#: most exact-walk + offset-refit rounds per start (asymmetric)
ROUNDS = 3


@jit
def _integer_table(qmin, qmax):
    """The integer quants [qmin, qmax] as a table: x ≈ d·q is x ≈ d·T[q − qmin]."""
    return np.arange(qmin, qmax + 1).astype(np.float64)


@jit
def _starts(table):
    """Each element's table index as the inverse scale t → 0⁺, for x = 0, x > 0 and x < 0: the entry nearest 0, 0⁺
    and 0⁻ (the first entry whose upper midpoint lies above 0⁺, or at or above 0⁻)."""
    nt = table.shape[0]
    z0 = 0
    for k in range(nt):
        if abs(table[k]) < abs(table[z0]):
            z0 = k
    zp = nt - 1
    zn = nt - 1
    for k in range(nt - 2, -1, -1):
        mid = 0.5 * (table[k] + table[k + 1])
        if mid > 0.0:
            zp = k
        if mid >= 0.0:
            zn = k
    return z0, zp, zn


@leaf
def _breakpoint(xi, ui, table, k):
    """The inverse scale at which an element (value xi, ui = 1/xi, table index k) moves one entry away from 0,
    or -1."""
    if xi > 0.0 and k < table.shape[0] - 1:
        return 0.5 * (table[k] + table[k + 1]) * ui
    if xi < 0.0 and k > 0:
        return 0.5 * (table[k - 1] + table[k]) * ui
    return -1.0


@leaf
def _replay(kt, win, p, i):
    """Leaf ``i`` of the winner tree (``p`` leaves with keys ``kt``; ``win[node]`` the leaf that wins the node's
    subtree, ties to the lower leaf) has a new key: replay its matches up to the root, ``win[1]``."""
    cur = i
    kc = kt[i]
    node = p + i
    while node > 1:
        sib = win[node ^ 1]
        ks = kt[sib]
        take = (ks < kc) | ((ks == kc) & ((node & 1) == 1))  # a left sibling holds the lower leaves
        cur = sib if take else cur
        kc = ks if take else kc
        node >>= 1
        win[node] = cur


@leaf
def _start_index(xi, starts):
    z0, zp, zn = starts
    return zp if xi > 0.0 else zn if xi < 0.0 else z0


@leaf
def _walk(x, w, sign, table, starts, log, kt, win, cur, ux, q, rival):
    """Best nearest-entry assignment of sign·x ≈ d·T[q] (d > 0) over all scales; returns F (−1 if none) and writes the
    table indices to q.  An integer table gives x ≈ d·q.  ``log`` (n·len(table)), ``kt``/``win`` (the winner tree of
    the pending breakpoints, one leaf per element), ``cur``, ``ux`` (n) are scratch (_scratch).  ``rival``: an F
    found elsewhere that this walk only matters if it beats (−1: none); the walk may stop once it cannot, and then
    returns less than ``rival``.

    The walk stops early once no larger scale can reach the best F: an element at the end of its walk keeps its
    entry for every larger t, so with S those elements, F(t') ≤ Σwx² − min_d Σ_S w(x − d·v)² for all t' ≥ t (the
    others relaxed to fit exactly); that bound only falls as S grows."""
    n = x.shape[0]
    s1 = 0.0
    s2 = 0.0
    sxx = 0.0  # Σwx² of the block, and Σwx², Σwxv, Σwv² of the elements that reached the end of their walk
    fxx = 0.0
    fxv = 0.0
    fvv = 0.0
    p = kt.shape[0]
    for i in range(n):
        xi = sign * np.float64(x[i])
        k = _start_index(xi, starts)
        cur[i] = k
        wi = np.float64(w[i])
        v = table[k]
        s1 += wi * xi * v
        s2 += wi * v * v
        sxx += wi * xi * xi
        ux[i] = 1.0 / xi if xi != 0.0 else 0.0
        t = _breakpoint(xi, ux[i], table, k)
        if t > 0.0:
            kt[i] = t
        else:
            kt[i] = np.inf
            fxx += wi * xi * xi
            fxv += wi * xi * v
            fvv += wi * v * v
    for i in range(n, p):
        kt[i] = np.inf
    for i in range(p):
        win[p + i] = i
    for node in range(p - 1, 0, -1):
        lft = win[2 * node]
        rgt = win[2 * node + 1]
        win[node] = rgt if kt[rgt] < kt[lft] else lft
    best = s1 * s1 / s2 if s2 > 0.0 and s1 > 0.0 else -1.0
    best_k = 0
    ne = 0
    while kt[win[1]] < np.inf:
        t = kt[win[1]]
        while kt[win[1]] == t:  # every breakpoint at this scale, before F is looked at
            i = win[1]
            xi = sign * np.float64(x[i])
            wi = np.float64(w[i])
            old = table[cur[i]]
            cur[i] += 1 if xi > 0.0 else -1
            new = table[cur[i]]
            s1 += wi * xi * (new - old)
            s2 += wi * (new * new - old * old)
            log[ne] = i
            ne += 1
            tn = _breakpoint(xi, ux[i], table, cur[i])
            if tn > 0.0:
                kt[i] = tn
            else:
                kt[i] = np.inf
                fxx += wi * xi * xi
                fxv += wi * xi * new
                fvv += wi * new * new
            _replay(kt, win, p, i)
        if s2 > 0.0 and s1 > 0.0 and s1 * s1 >= best * TIE * s2:  # F >= best: ties go to the later
            best = s1 * s1 / s2                                      # breakpoint, the smaller scale packs better
            best_k = ne
        bar = max(best, rival)
        resid = fxx - fxv * fxv / fvv if fvv > 0.0 else fxx
        if bar > 0.0 and (sxx - resid) * (1.0 + 1e-9) < bar * TIE:
            break
    for i in range(n):
        q[i] = _start_index(sign * np.float64(x[i]), starts)
    for j in range(best_k):
        i = log[j]
        q[i] += 1 if sign * x[i] > 0 else -1
    return best


@jit
def _scratch(n, nt):
    p = 1
    while p < n:
        p *= 2
    return np.empty(n * nt, np.int64), np.empty(p), np.empty(2 * p, np.int64), np.empty(n, np.int64), np.empty(n)


@jit
def symmetric(x, w, qmin, qmax, d, q):
    """Exact optimum of x ≈ d·q per block (rows of x)."""
    nbl, n = x.shape
    lin = _integer_table(qmin, qmax)
    starts = _starts(lin)
    log, kt, win, cur, ux = _scratch(n, lin.shape[0])
    qa = np.empty(n, np.int64)
    qb = np.empty(n, np.int64)
    for b in range(nbl):
        xb = x[b]
        wb = w[b]
        fa = _walk(xb, wb, 1.0, lin, starts, log, kt, win, cur, ux, qa, -1.0)
        fb = _walk(xb, wb, -1.0, lin, starts, log, kt, win, cur, ux, qb, fa)
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
def _alternate(xb, wb, off, lin, offset_max, scratch, qc, y, qbest, best):
    """From offset ``off``: exact best quants for the offset, offset refitted, until stable.  Updates ``qbest`` and
    returns (error, d, m) when it beats ``best`` = (error, d, m).  ``lin`` is the integer table [0, qmax]."""
    n = xb.shape[0]
    log, kt, win, cur, ux = scratch
    starts = (0, 0, 0)
    best_err, bd, bm = best
    for _ in range(ROUNDS):
        for i in range(n):
            y[i] = np.float32(np.float64(xb[i]) - off)
        _walk(y, wb, 1.0, lin, starts, log, kt, win, cur, ux, qc, -1.0)
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
    lin = _integer_table(0, qmax)
    scratch = _scratch(n, lin.shape[0])
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
            best = _alternate(xb, wb, off, lin, offset_max, scratch, qc, y, qbest, best)
        d[b] = best[1]
        m[b] = best[2]
        for i in range(n):
            q[b, i] = qbest[i]


@jit
def table(x, w, tab, d, q):
    """Exact optimum of x ≈ d·T[q] per block over every scale of either sign."""
    nbl, n = x.shape
    t64 = tab.astype(np.float64)
    starts = _starts(t64)
    log, kt, win, cur, ux = _scratch(n, t64.shape[0])
    qa = np.empty(n, np.int64)
    qb = np.empty(n, np.int64)
    tmp = np.empty(n, np.int64)
    for b in range(nbl):
        xb = x[b]
        wb = w[b]
        fa = _walk(xb, wb, 1.0, t64, starts, log, kt, win, cur, ux, qa, -1.0)
        fb = _walk(xb, wb, -1.0, t64, starts, log, kt, win, cur, ux, qb, fa)
        if fb > fa:
            qa[:] = qb
        if max(fa, fb) <= 0.0:
            d[b] = 0.0
            for i in range(n):
                q[b, i] = starts[0]
            continue
        dd, _ = polish_table(xb, wb, t64, qa, tmp)
        d[b] = dd
        for i in range(n):
            q[b, i] = qa[i]
