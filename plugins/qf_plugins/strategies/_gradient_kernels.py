"""numba kernels of the ``gradient`` strategy (ik_llama.cpp PR #295 / #302).

Start from the best quants of a scale scan; then repeatedly move one quant a step towards its value (the direction of
the error gradient for the least-squares scale, and offset, of the current quants), choosing the move that lowers the
block's error most, while the error falls.  With running sums every trial move costs O(1), a step O(n).
"""

from __future__ import annotations

import numpy as np

from qf.numerics import jit
from qf_plugins.quants._refine_kernels import nearest_entry
from qf_plugins.strategies._block_kernels import solve_scale_offset

#: rounds of re-rounding + refitting after the gradient moves (x ≈ d·q + m)
POLISH = 3


@jit
def _linear_sums(x, w, inv, qmin, qmax, q):
    s1 = 0.0
    s2 = 0.0
    for i in range(x.shape[0]):
        qi = max(qmin, min(qmax, np.int64(np.round(np.float64(x[i]) * inv))))
        q[i] = qi
        wq = np.float64(w[i]) * qi
        s1 += wq * x[i]
        s2 += wq * qi
    return s1, s2


@jit
def _signed_absmax(x):
    """The value of largest magnitude (the first of equal ones)."""
    mx = 0.0
    for i in range(x.shape[0]):
        if abs(np.float64(x[i])) > abs(mx):
            mx = np.float64(x[i])
    return mx


@jit
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


@jit
def symmetric(x, w, qmin, qmax, nstep, d, q):
    nbl, n = x.shape
    lin = np.arange(qmin, qmax + 1).astype(np.float64)  # x ≈ d·q as x ≈ d·lin[q − qmin]
    qc = np.empty(n, np.int64)
    qb = np.empty(n, np.int64)
    for b in range(nbl):
        xb = x[b]
        wb = w[b]
        mx = _signed_absmax(xb)
        if mx == 0.0:
            d[b] = 0.0
            for i in range(n):
                q[b, i] = 0
            continue
        best = -1.0
        s1b = 0.0
        s2b = 0.0
        for end in (qmin, qmax):  # the extreme value mapped near either end of the quant range
            for k in range(-nstep, nstep + 1):
                inv = (end + 0.1 * k * (1 if end > 0 else -1)) / mx
                s1, s2 = _linear_sums(xb, wb, inv, qmin, qmax, qc)
                if s2 > 0.0 and s1 * s1 / s2 > best:
                    best = s1 * s1 / s2
                    s1b = s1
                    s2b = s2
                    qb[:] = qc
        if best <= 0.0:
            d[b] = 0.0
            for i in range(n):
                q[b, i] = 0
            continue
        for i in range(n):
            qb[i] -= qmin
        s1b, s2b = _descend(xb, wb, lin, qb, s1b, s2b)
        for i in range(n):
            qb[i] += qmin
        d[b] = s1b / s2b
        for i in range(n):
            q[b, i] = qb[i]


@jit
def asymmetric(x, w, qmax, offset_max, nstep, d, m, q):
    nbl, n = x.shape
    qc = np.empty(n, np.int64)
    qb = np.empty(n, np.int64)
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
        best = sxx * 4.0 + 1.0
        bd = 0.0
        bm = lo
        bsq = 0.0
        bsqq = 0.0
        bsxq = 0.0
        for k in range(nstep + 1):
            inv = (qmax - 1.5 + 0.1 * k) / (hi - lo)
            sq = 0.0
            sqq = 0.0
            sxq = 0.0
            for i in range(n):
                qi = max(0, min(qmax, np.int64(np.round((np.float64(xb[i]) - lo) * inv))))
                qc[i] = qi
                wq = np.float64(wb[i]) * qi
                sq += wq
                sqq += wq * qi
                sxq += wq * xb[i]
            dd, mm, err = solve_scale_offset(sw, sq, sqq, sx, sxq, sxx, offset_max)
            if dd >= 0.0 and err < best:
                best = err
                bd = dd
                bm = mm
                bsq = sq
                bsqq = sqq
                bsxq = sxq
                qb[:] = qc
        for _ in range(n):
            pick = -1
            step = 0
            err_pick = best
            for i in range(n):
                s = 1 if np.float64(xb[i]) - bd * qb[i] - bm > 0.0 else -1
                new = qb[i] + s
                if new < 0 or new > qmax:
                    continue
                wi = np.float64(wb[i])
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


@jit
def table(x, w, tab, nstep, d, q):
    nbl, n = x.shape
    nt = tab.shape[0]
    t64 = tab.astype(np.float64)
    qc = np.empty(n, np.int64)
    qb = np.empty(n, np.int64)
    for b in range(nbl):
        xb = x[b]
        wb = w[b]
        mx = _signed_absmax(xb)
        if mx == 0.0:
            d[b] = 0.0
            z = nearest_entry(0.0, t64)
            for i in range(n):
                q[b, i] = z
            continue
        best = -1.0
        s1b = 0.0
        s2b = 0.0
        for end in (t64[0], t64[nt - 1]):
            for k in range(-nstep, nstep + 1):
                inv = (end + k * (1.0 if end > 0 else -1.0)) / mx
                s1 = 0.0
                s2 = 0.0
                for i in range(n):
                    qi = nearest_entry(np.float64(xb[i]) * inv, t64)
                    qc[i] = qi
                    wv = np.float64(wb[i]) * t64[qi]
                    s1 += wv * xb[i]
                    s2 += wv * t64[qi]
                if s2 > 0.0 and s1 * s1 / s2 > best:
                    best = s1 * s1 / s2
                    s1b = s1
                    s2b = s2
                    qb[:] = qc
        if best <= 0.0:
            d[b] = 0.0
            for i in range(n):
                q[b, i] = qb[i]
            continue
        s1b, s2b = _descend(xb, wb, t64, qb, s1b, s2b)
        d[b] = s1b / s2b
        for i in range(n):
            q[b, i] = qb[i]
