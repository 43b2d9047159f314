"""numba kernels of the ``exhaustive`` strategy: the cumulative breakpoint search (compilade, llama.cpp PR 12557).

For an inverse scale t > 0 every element's quant is the table entry nearest x·t (integer quants are the table [qmin,
qmax], where that is round(x·t)).  As t grows, the quants change one step at a time at known breakpoints; walking the
breakpoints in order while updating Σwxv and Σwv² in O(1) visits every distinct rounding of the block, so the best F
= (Σwxv)²/Σwv² among them is the exact optimum over all scales.  Negative scales are the same walk on −x.  Each
element's breakpoints come in increasing order, so the walk merges them with a winner tree of one pending breakpoint
per element (O(n) memory, O(log n) a step: a replay of the changed leaf's matches, one comparison a level).  For the
asymmetric problem the walk runs on x − m for a fixed offset m, and the offset is refitted by least squares in turn
until the quants stop changing.

A walk (_walk_begin, _walk_step, _walk_end) stops early once no larger scale can reach its best F, or a ``rival`` F
found elsewhere (the other sign's walk: this one only matters if it beats it; it then returns less than the rival):
an element at the end of its walk keeps its entry for every larger t, so with S those elements, F(t') ≤ Σwx² −
min_d Σ_S w(x − d·v)² for all t' ≥ t (the others relaxed to fit exactly); that bound only falls as S grows.
"""

from __future__ import annotations

import numpy as np

from qf.kernels import inline, jit, leaf
from qf_plugins.strategies._block_kernels import fit_scale_offset, polish_table, weighted_sq

#: offsets the alternation starts from: the block minimum raised by these fractions of a quant step
STARTS = (0.0, 0.5)
#: relative slack under which two values of F count as equal
TIE = 1.0 - 1e-12
#: most exact-walk + offset-refit rounds per start (asymmetric)
ROUNDS = 3
#: walks run side by side (_walkers)
WALKERS = 2


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
    subtree, ties to the lower leaf) has a new key: replay its matches up to the root, ``win[1]``.  (Unsigned
    indices: numba adds a negative-index fix-up to every signed one.)"""
    one = np.uint64(1)
    cur = np.uint64(i)
    kc = kt[cur]
    node = np.uint64(p) + cur
    while node > one:
        sib = win[node ^ one]
        ks = kt[sib]
        take = (ks < kc) | ((ks == kc) & ((node & one) == one))  # a left sibling holds the lower leaves
        cur = sib if take else cur
        kc = ks if take else kc
        node >>= one
        win[node] = cur


@leaf
def _start_index(xi, starts):
    z0, zp, zn = starts
    return zp if xi > 0.0 else zn if xi < 0.0 else z0


#: a walk's running state (float64 array, _scratch): the block's Σwxv, Σwv², Σwx²; Σwx², Σwxv, Σwv² of the elements
#: at the end of their walk, and the bound on F they give (_reach); the best F, the breakpoint count where it was met,
#: and the breakpoints walked so far
S1, S2, SXX, FXX, FXV, FVV, REACH, BEST, BEST_K, NE = range(10)


@leaf
def _reach(sxx, fxx, fxv, fvv):
    """The most F any larger scale can reach (the bound above), with a little slack for rounding."""
    resid = fxx - fxv * fxv / fvv if fvv > 0.0 else fxx
    return (sxx - resid) * (1.0 + 1e-9)


@leaf
def _walk_begin(x, w, sign, table, starts, kt, win, cur, ux, st):
    """Set a walk of sign·x ≈ d·T[q] (d > 0) up at t → 0⁺ (table indices in ``cur``); True if it has breakpoints to
    visit.  An integer table gives x ≈ d·q."""
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
    st[REACH] = _reach(sxx, fxx, fxv, fvv)
    st[BEST] = s1 * s1 / s2 if s2 > 0.0 and s1 > 0.0 else -1.0
    st[BEST_K] = 0.0
    st[NE] = 0.0
    return kt[win[1]] < np.inf


@inline
def _walk_step(x, w, sign, table, log, kt, win, cur, ux, st, rival):
    """Take every breakpoint at the next scale, then look at F; False once the walk is over (no breakpoint left, or
    none can reach ``max(best F, rival)``).  Inlined: called as a function, passing its arrays cost a fifth of the
    walk's time."""
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
            st[REACH] = _reach(st[SXX], fxx, fxv, fvv)  # it only changes here: not recomputed every step
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
    if bar > 0.0 and st[REACH] < bar * TIE:
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


@jit
def _scratch(n, nt):
    """The walkers' scratch (row a for walker a): the breakpoint logs (n·nt), the winner trees' keys and nodes, each
    element's entry and 1/x, the running states (see S1…NE)."""
    p = 1
    while p < n:
        p *= 2
    k = WALKERS
    return (np.empty((k, n * nt), np.int64), np.empty((k, p)), np.empty((k, 2 * p), np.uint64),
            np.empty((k, n), np.int64), np.empty((k, n)), np.empty((k, 10)))


@leaf
def _race(w, table, blk, go, y, par, log, kt, win, cur, ux, st):
    """Step the walking walkers (``go``) one scale each in turn until one of them ends its walk."""
    while True:
        for a in range(WALKERS):
            if go[a]:
                go[a] = _walk_step(y[a], w[max(blk[a], 0)], par[a, 0], table, log[a], kt[a], win[a], cur[a], ux[a],
                                   st[a], par[a, 1])
                if not go[a]:
                    return


@inline
def _walkers(w, table, starts, ctx, first, after):
    """Run every block's walks on WALKERS walkers that take one scale each in turn, each starting on the next block
    as soon as its own is done.  A walk is a chain of dependent loads (the winner tree) that leaves the processor
    mostly idle; two independent chains overlap (a third or fourth walker gained nothing more, measured).  Pairing
    the two signs, or the two offset starts, of one block gains less: one walk usually ends long before the other.

    ``first(a, b, ctx, y, par)`` sets up block b's first walk on walker a: its values ``y`` (float32), ``par[0]`` its
    sign and ``par[1]`` its rival (see _walk_step).  ``after(a, b, f, q, ctx, y, par)`` takes that walk's best F and
    table indices and either sets up the block's next walk (True) or writes the block's result (False).  A block's
    result depends on its own walks only, so the output does not depend on which walker ran it.  (Inlined into each
    kernel: numba cannot cache a function that takes functions as arguments.)"""
    nbl, n = w.shape
    log, kt, win, cur, ux, st = _scratch(n, table.shape[0])
    y = np.empty((WALKERS, n), np.float32)
    par = np.empty((WALKERS, 2))
    q = np.empty((WALKERS, n), np.int64)
    blk = np.full(WALKERS, -1, np.int64)
    go = np.zeros(WALKERS, np.bool_)
    nxt = 0
    while True:
        for a in range(WALKERS):
            while not go[a] and (blk[a] >= 0 or nxt < nbl):
                b = blk[a]
                if b >= 0:
                    f = _walk_end(y[a], par[a, 0], starts, log[a], st[a], q[a])
                    if not after(a, b, f, q[a], ctx, y[a], par[a]):
                        b = -1
                if b < 0 and nxt < nbl:
                    b = nxt
                    nxt += 1
                    first(a, b, ctx, y[a], par[a])
                blk[a] = b
                if b >= 0:
                    go[a] = _walk_begin(y[a], w[b], par[a, 0], table, starts, kt[a], win[a], cur[a], ux[a], st[a])
        if not go.any():
            break
        _race(w, table, blk, go, y, par, log, kt, win, cur, ux, st)


@jit
def _both_signs(a, b, ctx, y, par):
    """``first`` of the symmetric and table problems: the block's positive scales (then its negative ones)."""
    x = ctx[0]
    for i in range(x.shape[1]):
        y[i] = x[b, i]
    par[0] = 1.0
    par[1] = -1.0


@jit
def _better_sign(a, f, q, fa, qa, par):
    """After the positive walk: set up the negative one, which only matters if it beats it (False).  After the
    negative walk: the better of the two in ``fa[a]`` (F) and ``qa[a]`` (the indices) (True)."""
    if par[0] > 0.0:
        fa[a] = f
        qa[a] = q
        par[0] = -1.0
        par[1] = f
        return False
    if f > fa[a]:
        fa[a] = f
        qa[a] = q
    return True


@jit
def _symmetric_after(a, b, f, q, ctx, y, par):
    """``after`` of x ≈ d·q: once both signs are walked, the better quants and their least-squares scale."""
    x, w, qmin, d, qout, fa, qa = ctx
    if not _better_sign(a, f, q, fa, qa, par):
        return True
    s1 = 0.0
    s2 = 0.0
    for i in range(x.shape[1]):
        qi = qa[a, i] + qmin
        s1 += np.float64(w[b, i]) * np.float64(x[b, i]) * qi
        s2 += np.float64(w[b, i]) * qi * qi
        qout[b, i] = qi
    d[b] = s1 / s2 if s2 > 0.0 else 0.0
    return False


@jit
def symmetric(x, w, qmin, qmax, d, q):
    """Exact optimum of x ≈ d·q per block (rows of x)."""
    lin = _integer_table(qmin, qmax)
    ctx = (x, w, qmin, d, q, np.empty(WALKERS), np.empty((WALKERS, x.shape[1]), np.int64))
    _walkers(w, lin, _starts(lin), ctx, _both_signs, _symmetric_after)


@jit
def _table_after(a, b, f, q, ctx, y, par):
    """``after`` of x ≈ d·T[q]: once both signs are walked, the better entries, polished (polish_table)."""
    x, w, t64, z, d, qout, fa, qa, tmp = ctx
    if not _better_sign(a, f, q, fa, qa, par):
        return True
    if fa[a] <= 0.0:
        d[b] = 0.0
        for i in range(x.shape[1]):
            qout[b, i] = z
        return False
    dd, _ = polish_table(x[b], w[b], t64, qa[a], tmp)
    d[b] = dd
    for i in range(x.shape[1]):
        qout[b, i] = qa[a, i]
    return False


@jit
def table(x, w, tab, d, q):
    """Exact optimum of x ≈ d·T[q] per block over every scale of either sign."""
    t64 = tab.astype(np.float64)
    starts = _starts(t64)
    n = x.shape[1]
    ctx = (x, w, t64, starts[0], d, q, np.empty(WALKERS), np.empty((WALKERS, n), np.int64), np.empty(n, np.int64))
    _walkers(w, t64, starts, ctx, _both_signs, _table_after)


@jit
def _offset_start(a, b, k, ctx, y):
    """Start ``k`` of the alternation on walker a: the offset (the block minimum raised by STARTS[k] of a quant
    step) and the values x − offset to walk."""
    x, w, qmax, offset_max, d, m, qout, span, off, state, fit, qbest = ctx
    off[a] = min(span[a, 0] + STARTS[k] * (span[a, 1] - span[a, 0]) / qmax, offset_max)
    state[a, 0] = k
    state[a, 1] = 0
    _shifted(x[b], off[a], y)


@jit
def _shifted(xb, off, y):
    """y = x − off, the values a walk for offset ``off`` sees."""
    for i in range(xb.shape[0]):
        y[i] = np.float32(np.float64(xb[i]) - off)


@jit
def _alternation_first(a, b, ctx, y, par):
    """``first`` of x ≈ d·q + m: the block's span, no fit yet for any start, the first start's walk (positive scales
    only: the quants count up from the offset)."""
    x, w, qmax, offset_max, d, m, qout, span, off, state, fit, qbest = ctx
    xb = x[b]
    lo = np.float64(xb[0])
    hi = np.float64(xb[0])
    for i in range(xb.shape[0]):
        lo = min(lo, np.float64(xb[i]))
        hi = max(hi, np.float64(xb[i]))
    span[a, 0] = lo
    span[a, 1] = hi
    none = weighted_sq(xb, w[b]) * 4.0 + 1.0
    for k in range(len(STARTS)):
        fit[a, k, 0] = none
        fit[a, k, 1] = 0.0
        fit[a, k, 2] = 0.0
        qbest[a, k] = 0
    par[0] = 1.0
    par[1] = -1.0
    _offset_start(a, b, 0, ctx, y)


@jit
def _alternation_after(a, b, f, q, ctx, y, par):
    """The walk for the current offset is done: refit the offset; walk again for the new offset until it is stable
    (at most ROUNDS walks), then from the next start; finally the best fit over all starts and rounds (the first of
    equal ones)."""
    x, w, qmax, offset_max, d, m, qout, span, off, state, fit, qbest = ctx
    k = state[a, 0]
    dd, mm, err = fit_scale_offset(x[b], w[b], q, offset_max)
    again = dd >= 0.0
    if again:
        if err < fit[a, k, 0]:
            fit[a, k, 0] = err
            fit[a, k, 1] = dd
            fit[a, k, 2] = mm
            qbest[a, k] = q
        again = mm != off[a]
        off[a] = mm
    state[a, 1] += 1
    if again and state[a, 1] < ROUNDS:
        _shifted(x[b], off[a], y)
        return True
    if k + 1 < len(STARTS):
        _offset_start(a, b, k + 1, ctx, y)
        return True
    pick = 0
    for j in range(1, len(STARTS)):
        if fit[a, j, 0] < fit[a, pick, 0]:
            pick = j
    d[b] = fit[a, pick, 1]
    m[b] = fit[a, pick, 2]
    for i in range(x.shape[1]):
        qout[b, i] = qbest[a, pick, i]
    return False


@jit
def asymmetric(x, w, qmax, offset_max, d, m, q):
    """x ≈ d·q + m: alternate exact quants for an offset (one walk) and the least-squares offset for those quants,
    until the offset is stable, from each start in STARTS (the block minimum raised by a fraction of a quant step);
    the best fit wins."""
    n = x.shape[1]
    ns = len(STARTS)
    k = WALKERS
    # per walker: its block's (min, max), the current offset, (start, round), each start's best (error, d, m), quants
    ctx = (x, w, qmax, offset_max, d, m, q, np.empty((k, 2)), np.empty(k), np.empty((k, 2), np.int64),
           np.empty((k, ns, 3)), np.empty((k, ns, n), np.int64))
    _walkers(w, _integer_table(0, qmax), (0, 0, 0), ctx, _alternation_first, _alternation_after)
