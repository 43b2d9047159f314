"""numba kernels of the ``gradient`` strategy (ik_llama.cpp PR #295 / #302).

Start from the best quants of a scale scan; then repeatedly move one quant a step towards its value (the direction of
the error gradient for the least-squares scale, and offset, of the current quants), choosing the move that lowers the
block's error most, while the error falls.  With running sums every trial move costs O(1), a step O(n).
"""

from __future__ import annotations

import numpy as np

from qf.kernels import inline, jit, leaf, nearest_entry
from qf_plugins.strategies._block_kernels import solve_scale_offset

#: rounds of re-rounding + refitting after the gradient moves (x ≈ d·q + m)
POLISH = 3
#: the scans run over a multiple of this many candidates, padded with copies of the last candidate: LLVM's vector
#: loop takes 8 float64 candidates a step (two 4-lane vectors), so their candidate loops then have no scalar remainder
#: (4 would leave one: 28 candidates ran as 24 vector + 4 scalar)
PAD = 8


@jit
def _padded(nc):
    """``nc`` rounded up to a multiple of PAD."""
    return (nc + PAD - 1) // PAD * PAD


@inline
def _scan(x, w, lo, invs, qmin, qmax, sq, sqq, sxq, with_sq):
    """The candidate sums of _scan_sums; Σwq only ``with_sq`` (a constant at each call: the loop is compiled
    without it where it is False)."""
    nc = invs.shape[0]
    qlo = np.float64(qmin)
    qhi = np.float64(qmax)
    for c in range(nc):
        sq[c] = 0.0
        sqq[c] = 0.0
        sxq[c] = 0.0
    for i in range(x.shape[0]):
        xi = np.float64(x[i])
        wi = np.float64(w[i])
        for c in range(nc):
            qi = min(qhi, max(qlo, np.round((xi - lo) * invs[c])))
            wq = wi * qi
            if with_sq:
                sq[c] += wq
            sqq[c] += wq * qi
            sxq[c] += wq * xi


@leaf
def _scan_sums(x, w, lo, invs, qmin, qmax, sq, sqq, sxq):
    """For every candidate inverse scale ``invs[c]``: the sums Σwq, Σwq², Σwxq of q = clamp(round((x − lo)·inv),
    qmin, qmax).  One pass over the values with the candidates innermost (that loop vectorises)."""
    _scan(x, w, lo, invs, qmin, qmax, sq, sqq, sxq, True)


@leaf
def _scan_fit_sums(x, w, invs, qmin, qmax, sqq, sxq):
    """_scan_sums without an offset and without Σwq (x ≈ d·q needs only Σwq² and Σwxq): the same sums, bit for
    bit, for less work."""
    _scan(x, w, 0.0, invs, qmin, qmax, sqq, sqq, sxq, False)


@leaf
def _round_quants(x, lo, inv, qmin, qmax, q):
    """q = clamp(round((x − lo)·inv), qmin, qmax), rounded as _scan_sums does."""
    qlo = np.float64(qmin)
    qhi = np.float64(qmax)
    for i in range(x.shape[0]):
        q[i] = np.int64(min(qhi, max(qlo, np.round((np.float64(x[i]) - lo) * inv))))


@leaf
def _signed_absmax(x):
    """The value of largest magnitude (the first of equal ones)."""
    mx = 0.0
    for i in range(x.shape[0]):
        if abs(np.float64(x[i])) > abs(mx):
            mx = np.float64(x[i])
    return mx


@leaf
def _descend(xb, wb, vals, idx, s1, s2):
    """Move one quant (an index into the ascending values ``vals``) a step towards its value, the move that raises
    F = s1²/s2 most, while F rises; ``idx`` is updated, the final (s1, s2) returned."""
    n = xb.shape[0]
    nt = vals.shape[0]
    for _ in range(n):
        dd = s1 / s2
        fb = s1 * s1 / s2
        pick = -1
        step = 0
        for i in range(n):
            s = 1 if (np.float64(xb[i]) - dd * vals[idx[i]]) * dd > 0.0 else -1
            if idx[i] + s < 0 or idx[i] + s >= nt:
                continue
            wi = np.float64(wb[i])
            old = vals[idx[i]]
            new = vals[idx[i] + s]
            n1 = s1 + wi * xb[i] * (new - old)
            n2 = s2 + wi * (new * new - old * old)
            if n2 > 0.0 and n1 * n1 / n2 > fb:
                fb = n1 * n1 / n2
                pick = i
                step = s
        if pick < 0:
            break
        wi = np.float64(wb[pick])
        old = vals[idx[pick]]
        new = vals[idx[pick] + step]
        s1 += wi * xb[pick] * (new - old)
        s2 += wi * (new * new - old * old)
        idx[pick] += step
    return s1, s2


@leaf
def _best_candidate(s1, s2):
    """Index of the candidate with the largest F = s1²/s2 (the first of equal ones), or -1 if none has s2 > 0."""
    pick = -1
    best = -1.0
    for c in range(s1.shape[0]):
        if s2[c] > 0.0 and s1[c] * s1[c] / s2[c] > best:
            best = s1[c] * s1[c] / s2[c]
            pick = c
    return pick


@jit
def symmetric(x, w, qmin, qmax, nstep, d, q):
    nbl, n = x.shape
    lin = np.arange(qmin, qmax + 1).astype(np.float64)  # x ≈ d·q as x ≈ d·lin[q − qmin]
    qb = np.empty(n, np.int64)
    steps = np.empty(2 * (2 * nstep + 1))  # the extreme value mapped near either end of the quant range
    c = 0
    for end in (qmin, qmax):
        for k in range(-nstep, nstep + 1):
            steps[c] = end + 0.1 * k * (1 if end > 0 else -1)
            c += 1
    nc = steps.shape[0]
    invs = np.empty(_padded(nc))
    s1 = np.empty_like(invs)
    s2 = np.empty_like(invs)
    for b in range(nbl):
        xb = x[b]
        wb = w[b]
        mx = _signed_absmax(xb)
        pick = -1
        if mx != 0.0:
            for c in range(invs.shape[0]):
                invs[c] = steps[min(c, nc - 1)] / mx  # padded with copies of the last (see PAD)
            _scan_fit_sums(xb, wb, invs, qmin, qmax, s2, s1)
            pick = _best_candidate(s1[:nc], s2[:nc])
        if pick < 0 or s1[pick] * s1[pick] / s2[pick] <= 0.0:
            d[b] = 0.0
            for i in range(n):
                q[b, i] = 0
            continue
        _round_quants(xb, 0.0, invs[pick], qmin, qmax, qb)
        for i in range(n):
            qb[i] -= qmin
        s1b, s2b = _descend(xb, wb, lin, qb, s1[pick], s2[pick])
        d[b] = s1b / s2b
        for i in range(n):
            q[b, i] = qb[i] + qmin


@inline
def _plain_fit(sw, sq, sqq, sx, sxq, sxx, offset_max):
    """solve_scale_offset's plain least-squares case, without branches: (d, m, error, True), or (…, False) where
    that case does not apply (the caller then solves in full)."""
    det = sw * sqq - sq * sq
    d = (sw * sxq - sq * sx) / det
    m = (sqq * sx - sq * sxq) / det
    err = sxx - 2.0 * d * sxq - 2.0 * m * sx + d * d * sqq + 2.0 * d * m * sq + m * m * sw
    plain = (sw > 0.0) & (det > 1e-30 * max(sw * sqq, 1e-300)) & (m <= offset_max)
    return d, m, max(err, 0.0), plain


@leaf
def _trial_moves(xb, wb, qb, bd, bm, bsq, bsqq, bsxq, sw, sx, sxx, qmax, offset_max, trial):
    """Every quant's move one step towards its value, refitted: trial[0] = the step (0: none possible), [1] d,
    [2] the error, [3] 1 where that is solve_scale_offset's plain least-squares case (its exact arithmetic), else 0
    (the caller then solves in full).  No calls and no early exits, so the loop vectorises."""
    hi = np.float64(qmax)
    for i in range(xb.shape[0]):
        xi = np.float64(xb[i])
        wi = np.float64(wb[i])
        qi = np.float64(qb[i])
        s = 1.0 if xi - bd * qi - bm > 0.0 else -1.0
        new = qi + s
        d, _, err, plain = _plain_fit(sw, bsq + wi * s, bsqq + wi * (new * new - qi * qi), sx, bsxq + wi * xi * s,
                                      sxx, offset_max)
        trial[0, i] = s if new >= 0.0 and new <= hi else 0.0
        trial[1, i] = d
        trial[2, i] = err
        trial[3, i] = 1.0 if plain else 0.0


@leaf
def _scan_fits(sw, sq, sqq, sx, sxq, sxx, offset_max, fits):
    """_plain_fit for every candidate's sums: fits[0] d, [1] m, [2] the error, [3] 1 for the plain case (a loop
    that vectorises)."""
    for c in range(sq.shape[0]):
        d, m, err, plain = _plain_fit(sw, sq[c], sqq[c], sx, sxq[c], sxx, offset_max)
        fits[0, c] = d
        fits[1, c] = m
        fits[2, c] = err
        fits[3, c] = 1.0 if plain else 0.0


@jit
def asymmetric(x, w, qmax, offset_max, nstep, d, m, q):
    nbl, n = x.shape
    qc = np.empty(n, np.int64)
    qb = np.empty(n, np.int64)
    invs = np.empty(_padded(nstep + 1))
    csq = np.empty_like(invs)
    csqq = np.empty_like(invs)
    csxq = np.empty_like(invs)
    fits = np.empty((4, invs.shape[0]))
    trial = np.empty((4, n))
    for b in range(nbl):
        xb = x[b]
        wb = w[b]
        lo = np.float64(xb[0])
        hi = np.float64(xb[0])
        sw = 0.0
        sx = 0.0
        sxx = 0.0
        for i in range(n):
            xi = np.float64(xb[i])
            wi = np.float64(wb[i])
            lo = min(lo, xi)
            hi = max(hi, xi)
            sw += wi
            sx += wi * xi
            sxx += wi * xi * xi
        lo = min(lo, offset_max)
        if hi <= lo:
            dd, mm, _ = solve_scale_offset(sw, 0.0, 0.0, sx, 0.0, sxx, offset_max)
            d[b] = 0.0
            m[b] = mm
            for i in range(n):
                q[b, i] = 0
            continue
        for c in range(invs.shape[0]):
            invs[c] = (qmax - 1.5 + 0.1 * min(c, nstep)) / (hi - lo)
        _scan_sums(xb, wb, lo, invs, 0, qmax, csq, csqq, csxq)
        _scan_fits(sw, csq, csqq, sx, csxq, sxx, offset_max, fits)
        best = sxx * 4.0 + 1.0
        bd = 0.0
        bm = lo
        pick = -1
        for c in range(nstep + 1):
            dd, mm, err = fits[0, c], fits[1, c], fits[2, c]
            if not (fits[3, c] > 0.0):
                dd, mm, err = solve_scale_offset(sw, csq[c], csqq[c], sx, csxq[c], sxx, offset_max)
            if dd >= 0.0 and err < best:
                best = err
                bd = dd
                bm = mm
                pick = c
        if pick >= 0:
            bsq, bsqq, bsxq = csq[pick], csqq[pick], csxq[pick]
            _round_quants(xb, lo, invs[pick], 0, qmax, qb)
        else:
            bsq = bsqq = bsxq = 0.0
            qb[:] = 0
        for _ in range(n):
            pick = -1
            step = 0
            err_pick = best
            _trial_moves(xb, wb, qb, bd, bm, bsq, bsqq, bsxq, sw, sx, sxx, qmax, offset_max, trial)
            for i in range(n):
                s = np.int64(trial[0, i])
                if s == 0:
                    continue
                dd = trial[1, i]
                err = trial[2, i]
                if not (trial[3, i] > 0.0):  # not the plain least-squares case: the full solve
                    wi = np.float64(wb[i])
                    new = qb[i] + s
                    dd, mm, err = solve_scale_offset(sw, bsq + wi * s, bsqq + wi * (new * new - qb[i] * qb[i]), sx,
                                                     bsxq + wi * xb[i] * s, sxx, offset_max)
                if dd >= 0.0 and err < err_pick:
                    err_pick = err
                    pick = i
                    step = s
            if pick < 0:
                break
            wi = np.float64(wb[pick])
            old = qb[pick]
            new = old + step
            bsq += wi * step
            bsqq += wi * (new * new - old * old)
            bsxq += wi * xb[pick] * step
            bd, bm, best = solve_scale_offset(sw, bsq, bsqq, sx, bsxq, sxx, offset_max)
            qb[pick] = new
        for _ in range(POLISH):  # quants re-rounded for the fitted scale and offset, refitted, while it helps
            if bd <= 0.0:
                break
            inv = 1.0 / bd
            sq = 0.0
            sqq = 0.0
            sxq = 0.0
            for i in range(n):
                qi = max(0, min(qmax, np.int64(np.round((np.float64(xb[i]) - bm) * inv))))
                qc[i] = qi
                wq = np.float64(wb[i]) * qi
                sq += wq
                sqq += wq * qi
                sxq += wq * xb[i]
            dd, mm, err = solve_scale_offset(sw, sq, sqq, sx, sxq, sxx, offset_max)
            if dd < 0.0 or err >= best:
                break
            best = err
            bd = dd
            bm = mm
            qb[:] = qc
        d[b] = bd
        m[b] = bm
        for i in range(n):
            q[b, i] = qb[i]


@leaf
def _scan_table_sums(x, w, invs, t64, v, val, s1, s2):
    """For every candidate inverse scale ``invs[c]`` (monotone in c, so the first and the last bound them all):
    s1[c] = Σw·x·T, s2[c] = Σw·T² with T the table entry nearest to x·inv (ties to the lower entry, exactly as
    nearest_entry).  The candidates are innermost and the entry is found by a monotone compare-and-select over the
    table entries between those nearest the smallest and the largest x·inv (few, for candidate scales close
    together), so the loops vectorise; ``v``/``val`` are scratch."""
    nc = invs.shape[0]
    for c in range(nc):
        s1[c] = 0.0
        s2[c] = 0.0
    for i in range(x.shape[0]):
        xi = np.float64(x[i])
        wi = np.float64(w[i])
        for c in range(nc):
            v[c] = xi * invs[c]
        vmin = min(v[0], v[nc - 1])  # the candidates are in order of scale
        vmax = max(v[0], v[nc - 1])
        jlo = nearest_entry(vmin, t64)  # every candidate's entry lies in [jlo, jhi]: nearest_entry is monotone
        jhi = jlo
        while jhi < t64.shape[0] - 1 and vmax - t64[jhi] > t64[jhi + 1] - vmax:
            jhi += 1
        for c in range(nc):
            val[c] = t64[jlo]
        for j in range(jlo, jhi):
            lo = t64[j]
            hi = t64[j + 1]
            for c in range(nc):
                val[c] = hi if v[c] - lo > hi - v[c] else val[c]
        for c in range(nc):
            wv = wi * val[c]
            s1[c] += wv * xi
            s2[c] += wv * val[c]


@jit
def table(x, w, tab, nstep, d, q):
    nbl, n = x.shape
    nt = tab.shape[0]
    t64 = tab.astype(np.float64)
    qb = np.empty(n, np.int64)
    ng = 2 * nstep + 1  # candidates per end of the table: the extreme value mapped near that end
    gp = _padded(ng)
    steps = np.empty(2 * gp)  # each end's candidates scanned apart (close scales: few table entries to compare)
    for g in range(2):
        end = t64[0] if g == 0 else t64[nt - 1]
        for c in range(gp):
            k = min(c, ng - 1) - nstep
            steps[g * gp + c] = end + k * (1.0 if end > 0 else -1.0)
    invs = np.empty_like(steps)
    s1 = np.empty_like(steps)
    s2 = np.empty_like(steps)
    v = np.empty(gp)
    val = np.empty(gp)
    z = nearest_entry(0.0, t64)
    for b in range(nbl):
        xb = x[b]
        wb = w[b]
        mx = _signed_absmax(xb)
        pick = -1
        if mx != 0.0:
            for c in range(steps.shape[0]):
                invs[c] = steps[c] / mx
            best = -1.0
            for g in range(2):
                o = g * gp
                _scan_table_sums(xb, wb, invs[o:o + gp], t64, v, val, s1[o:o + gp], s2[o:o + gp])
                for c in range(o, o + ng):  # the best F, the first of equal ones (as _best_candidate)
                    if s2[c] > 0.0 and s1[c] * s1[c] / s2[c] > best:
                        best = s1[c] * s1[c] / s2[c]
                        pick = c
        if pick < 0:
            d[b] = 0.0
            for i in range(n):
                q[b, i] = z
            continue
        for i in range(n):
            qb[i] = nearest_entry(np.float64(xb[i]) * invs[pick], t64)
        if s1[pick] * s1[pick] / s2[pick] <= 0.0:
            d[b] = 0.0
            for i in range(n):
                q[b, i] = qb[i]
            continue
        s1b, s2b = _descend(xb, wb, t64, qb, s1[pick], s2[pick])
        d[b] = s1b / s2b
        for i in range(n):
            q[b, i] = qb[i]
