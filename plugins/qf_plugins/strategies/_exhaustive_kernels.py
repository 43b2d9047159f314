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


#: a walk's running state (float64 array, _scratch): the block's Σwxv, Σwv², Σwx²; Σwx², Σwxv, Σwv² of the elements
#: at the end of their walk; the best F, the breakpoint count where it was met, and the breakpoints walked so far
S1, S2, SXX, FXX, FXV, FVV, BEST, BEST_K, NE = range(9)


@leaf
def _walk_begin(x, w, sign, table, starts, kt, win, cur, ux, st):
    """Set a walk of sign·x up at t → 0⁺ (see _walk); True if it has breakpoints to visit."""
    n = x.shape[0]
    s1 = 0.0
    s2 = 0.0
    sxx = 0.0
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
    st[S1] = s1
    st[S2] = s2
    st[SXX] = sxx
    st[FXX] = fxx
    st[FXV] = fxv
    st[FVV] = fvv
    st[BEST] = s1 * s1 / s2 if s2 > 0.0 and s1 > 0.0 else -1.0
    st[BEST_K] = 0.0
    st[NE] = 0.0
    return kt[win[1]] < np.inf


@leaf
def _walk_step(x, w, sign, table, log, kt, win, cur, ux, st, rival):
    """Take every breakpoint at the next scale, then look at F; False once the walk is over (no breakpoint left, or
    none can reach ``max(best F, rival)``: see _walk)."""
    s1 = st[S1]
    s2 = st[S2]
    fxx = st[FXX]
    fxv = st[FXV]
    fvv = st[FVV]
    ne = np.int64(st[NE])
    p = kt.shape[0]
    t = kt[win[1]]
    while kt[win[1]] == t:
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
    st[S1] = s1
    st[S2] = s2
    st[FXX] = fxx
    st[FXV] = fxv
    st[FVV] = fvv
    st[NE] = ne
    best = st[BEST]
    if s2 > 0.0 and s1 > 0.0 and s1 * s1 >= best * TIE * s2:  # F >= best: ties go to the later breakpoint, the
        best = s1 * s1 / s2                                      # smaller scale packs better
        st[BEST] = best
        st[BEST_K] = ne
    bar = max(best, rival)
    resid = fxx - fxv * fxv / fvv if fvv > 0.0 else fxx
    if bar > 0.0 and (st[SXX] - resid) * (1.0 + 1e-9) < bar * TIE:
        return False
    return kt[win[1]] < np.inf


@leaf
def _walk_end(x, sign, starts, log, st, q):
    """The walk's best assignment into q (table indices); returns its F (−1 if none)."""
    for i in range(x.shape[0]):
        q[i] = _start_index(sign * np.float64(x[i]), starts)
    for j in range(np.int64(st[BEST_K])):
        i = log[j]
        q[i] += 1 if sign * x[i] > 0 else -1
    return st[BEST]


@leaf
def _walk(x, w, sign, table, starts, lane, q, rival):
    """Best nearest-entry assignment of sign·x ≈ d·T[q] (d > 0) over all scales; returns F (−1 if none) and writes the
    table indices to q.  An integer table gives x ≈ d·q.  ``lane`` is a walk's scratch (_scratch).  ``rival``: an F
    found elsewhere that this walk only matters if it beats (−1: none); the walk may stop once it cannot, and then
    returns less than ``rival``.

    The walk stops early once no larger scale can reach the best F: an element at the end of its walk keeps its
    entry for every larger t, so with S those elements, F(t') ≤ Σwx² − min_d Σ_S w(x − d·v)² for all t' ≥ t (the
    others relaxed to fit exactly); that bound only falls as S grows."""
    log, kt, win, cur, ux, st = lane
    go = _walk_begin(x, w, sign, table, starts, kt, win, cur, ux, st)
    while go:
        go = _walk_step(x, w, sign, table, log, kt, win, cur, ux, st, rival)
    return _walk_end(x, sign, starts, log, st, q)


@leaf
def _walk_pair(xa, xb, w, sa, sb, table, starts, la, lb, qa, qb, rivals):
    """Two walks (_walk: sa·xa and sb·xb, scratch la and lb) in lockstep, one scale of each in turn: each is a chain
    of dependent loads (the winner tree), so the processor overlaps the two.  ``rivals``: each walk takes the other's
    best F so far as its rival (the two signs of one block: only the better walk's result is used), else none."""
    loga, kta, wina, cura, uxa, sta = la
    logb, ktb, winb, curb, uxb, stb = lb
    ga = _walk_begin(xa, w, sa, table, starts, kta, wina, cura, uxa, sta)
    gb = _walk_begin(xb, w, sb, table, starts, ktb, winb, curb, uxb, stb)
    while ga or gb:
        if ga:
            ga = _walk_step(xa, w, sa, table, loga, kta, wina, cura, uxa, sta, stb[BEST] if rivals else -1.0)
        if gb:
            gb = _walk_step(xb, w, sb, table, logb, ktb, winb, curb, uxb, stb, sta[BEST] if rivals else -1.0)
    return _walk_end(xa, sa, starts, loga, sta, qa), _walk_end(xb, sb, starts, logb, stb, qb)


@jit
def _scratch(n, nt):
    """A walk's scratch: the breakpoint log (n·nt), the winner tree's keys and nodes, each element's entry and 1/x,
    the running state."""
    p = 1
    while p < n:
        p *= 2
    return (np.empty(n * nt, np.int64), np.empty(p), np.empty(2 * p, np.int64), np.empty(n, np.int64), np.empty(n),
            np.empty(9))


@jit
def symmetric(x, w, qmin, qmax, d, q):
    """Exact optimum of x ≈ d·q per block (rows of x)."""
    nbl, n = x.shape
    lin = _integer_table(qmin, qmax)
    starts = _starts(lin)
    la = _scratch(n, lin.shape[0])
    lb = _scratch(n, lin.shape[0])
    qa = np.empty(n, np.int64)
    qb = np.empty(n, np.int64)
    for b in range(nbl):
        xb = x[b]
        wb = w[b]
        fa, fb = _walk_pair(xb, xb, wb, 1.0, -1.0, lin, starts, la, lb, qa, qb, True)
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
def asymmetric(x, w, qmax, offset_max, d, m, q):
    """x ≈ d·q + m: alternate exact quants for an offset and the least-squares offset, until the offset is stable,
    from two starting offsets (the block minimum raised by 0 and by half a quant step, STARTS).  The two alternations
    run side by side (their walks in lockstep: _walk_pair); the best fit wins, the first of equal ones in the order
    of STARTS and rounds."""
    nbl, n = x.shape
    lin = _integer_table(0, qmax)
    starts = (0, 0, 0)
    lanes = (_scratch(n, lin.shape[0]), _scratch(n, lin.shape[0]))
    y = np.empty((2, n), np.float32)
    qc = np.empty((2, n), np.int64)
    qbest = np.empty((2, n), np.int64)
    fit = np.empty((2, 3))  # each alternation's best (error, d, m)
    off = np.empty(2)
    live = np.empty(2, np.bool_)
    for b in range(nbl):
        xb = x[b]
        wb = w[b]
        lo = np.float64(xb[0])
        hi = np.float64(xb[0])
        for i in range(n):
            lo = min(lo, np.float64(xb[i]))
            hi = max(hi, np.float64(xb[i]))
        none = weighted_sq(xb, wb) * 4.0 + 1.0
        for a in range(2):
            off[a] = min(lo + STARTS[a] * (hi - lo) / qmax, offset_max)
            live[a] = True
            fit[a, 0] = none
            fit[a, 1] = 0.0
            fit[a, 2] = 0.0
            for i in range(n):
                qbest[a, i] = 0
        for _ in range(ROUNDS):
            for a in range(2):
                if live[a]:
                    for i in range(n):
                        y[a, i] = np.float32(np.float64(xb[i]) - off[a])
            if live[0] and live[1]:
                _walk_pair(y[0], y[1], wb, 1.0, 1.0, lin, starts, lanes[0], lanes[1], qc[0], qc[1], False)
            elif live[0]:
                _walk(y[0], wb, 1.0, lin, starts, lanes[0], qc[0], -1.0)
            elif live[1]:
                _walk(y[1], wb, 1.0, lin, starts, lanes[1], qc[1], -1.0)
            else:
                break
            for a in range(2):
                if not live[a]:
                    continue
                dd, mm, err = fit_scale_offset(xb, wb, qc[a], offset_max)
                if dd < 0.0:
                    live[a] = False
                    continue
                if err < fit[a, 0]:
                    fit[a, 0] = err
                    fit[a, 1] = dd
                    fit[a, 2] = mm
                    qbest[a] = qc[a]
                if mm == off[a]:
                    live[a] = False
                off[a] = mm
        a = 1 if fit[1, 0] < fit[0, 0] else 0
        d[b] = fit[a, 1]
        m[b] = fit[a, 2]
        for i in range(n):
            q[b, i] = qbest[a, i]


@jit
def table(x, w, tab, d, q):
    """Exact optimum of x ≈ d·T[q] per block over every scale of either sign."""
    nbl, n = x.shape
    t64 = tab.astype(np.float64)
    starts = _starts(t64)
    la = _scratch(n, t64.shape[0])
    lb = _scratch(n, t64.shape[0])
    qa = np.empty(n, np.int64)
    qb = np.empty(n, np.int64)
    tmp = np.empty(n, np.int64)
    for b in range(nbl):
        xb = x[b]
        wb = w[b]
        fa, fb = _walk_pair(xb, xb, wb, 1.0, -1.0, t64, starts, la, lb, qa, qb, True)
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
