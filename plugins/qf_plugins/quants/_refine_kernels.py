"""Scale refinement for generic strategies: the stored (fp16, integer) scales that fit a solution best.

A strategy solves blocks with float scales; a type stores them quantized: an fp16 scale per block (legacy, IQ4_NL),
or integer sub-block scales (and mins) under fp16 super-block scales (K-quants, IQ4_XS).  Rounding each stored value
on its own throws away much of what the search gained, so the packers call these kernels, which evaluate the real
weighted error Σw(x − x̂)² of the decoded values (quants re-derived by rounding, as the packers do) and improve the
stored values by coordinate descent: per sub-block the best integer scale/min among the neighbours of the
least-squares optimum, then the least-squares super-block scales, while the error falls (by at least SETTLED).
Never used by ``ggml``.
"""

from __future__ import annotations

import numpy as np

from qf.kernels import F32, fp16_round, fp16_to_fp32, fp32_to_fp16, inline, jit, leaf, nearest_entry

#: the ``table`` argument of linear (integer) quants
NO_TABLE = np.empty(0)



@inline
def _decoded(a, b):
    """A candidate (scale, offset) as the packers store and decode it — float32 — in float64, and the inverse scale
    (0 for a zero scale)."""
    a32 = F32(a)
    av = np.float64(a32)
    return av, np.float64(F32(b)), 1.0 / av if a32 != F32(0.0) else 0.0


@inline
def _linear_quant(xi, b, inv, lo, hi):
    """round((x + b)·inv) clamped to [lo, hi], as a float."""
    return min(hi, max(lo, np.round((xi + b) * inv)))


@leaf
def group_error(x, w, o, n, a, b, qlo, qhi, table, q):
    """Σw(x − (a·v − b))² over x[o:o+n], v = q (rounded, clamped) or table[q] (nearest); writes q[o:o+n]."""
    xs = x[o:o + n]  # (indexed from 0, the loops need no negative-index checks and vectorise)
    ws = w[o:o + n]
    qs = q[o:o + n]
    av, bv, inv = _decoded(a, b)
    if table.shape[0] > 0:
        for i in range(n):
            qs[i] = nearest_entry(np.float64(xs[i]) * inv, table)
    else:  # the quants first (a loop that vectorises), then the sum in element order
        lo = np.float64(qlo)
        hi = np.float64(qhi)
        for i in range(n):
            qs[i] = np.int64(_linear_quant(np.float64(xs[i]), bv, inv, lo, hi))
    err = 0.0
    for i in range(n):
        r = np.float64(xs[i]) - (av * _value(qs[i], table) - bv)
        err += np.float64(ws[i]) * r * r
    return err


#: the most candidates group_errors is given at once (the nine fp16 (scale, offset) neighbours)
MAX_CANDIDATES = 9


@jit
def scratch(n):
    """Scratch for the kernels below on groups of up to ``n`` values: group_errors' three rows, then five rows of
    candidate values for their callers."""
    return np.empty((8, max(n, MAX_CANDIDATES)))


@leaf
def group_errors(x, w, o, n, a, b, nc, qlo, qhi, table, errs, tmp):
    """group_error for ``nc`` <= MAX_CANDIDATES candidates (a[c], b[c]): errs[c] = Σw(x − (a·v − b))² over x[o:o+n],
    each with its own rounded quants (not written); each candidate's sum in element order, as group_error's.
    ``tmp``: a :func:`scratch`."""
    if table.shape[0] > 0:
        _table_errors(x, w, o, n, a, b, nc, table, errs, tmp)
        return
    xs = x[o:o + n]
    ws = w[o:o + n]
    terms = tmp[0]
    lo = np.float64(qlo)
    hi = np.float64(qhi)
    for c in range(nc):  # a candidate's terms in a loop over the values (it vectorises), then their sum
        ac, bc, inv = _decoded(a[c], b[c])
        for i in range(n):
            xi = np.float64(xs[i])
            r = xi - (ac * _linear_quant(xi, bc, inv, lo, hi) - bc)
            terms[i] = np.float64(ws[i]) * r * r
        e = 0.0
        for i in range(n):
            e += terms[i]
        errs[c] = e


@leaf
def _table_errors(x, w, o, n, a, b, nc, table, errs, tmp):
    """group_errors for table quants: the candidates side by side (nearest_entry vectorises over the table)."""
    for c in range(nc):  # rows: the scales, the offsets, the inverse scales
        tmp[0, c], tmp[1, c], tmp[2, c] = _decoded(a[c], b[c])
        errs[c] = 0.0
    xs = x[o:o + n]
    ws = w[o:o + n]
    for i in range(n):
        xi = np.float64(xs[i])
        wi = np.float64(ws[i])
        for c in range(nc):
            r = xi - (tmp[0, c] * table[nearest_entry(xi * tmp[2, c], table)] - tmp[1, c])
            errs[c] += wi * r * r


@inline
def _value(q, table):
    return table[q] if table.shape[0] > 0 else np.float64(q)


#: refine_superblock stops once a round of coordinate descent lowers the error by less than this fraction (further
#: rounds then gain ~nothing: on the golden inputs stopping here changes no mean error in its first four digits)
SETTLED = 1e-3

#: initial super-block scales tried: the largest sub-block scale mapped to the end of the integer range, or beyond
#: it by these factors (an outlier sub-block is then clipped instead of flattening all the others)
INIT_FACTORS = (1.0, 0.8, 0.65, 0.5, 0.4, 0.3)


@leaf
def _init_super(x, w, sub, vals, lo, hi, other, other_sc, is_min, qlo, qhi, table, out, tmp, cints):
    """The fp16 super-block scale that fits best among INIT_FACTORS, for float sub-block values ``vals`` (scales,
    or mins when ``is_min``), with the matching integer values written to ``out``; ``other`` is the other
    super-block scale and ``other_sc`` its integers (kept fixed).  ``tmp`` (a :func:`scratch`) and ``cints``
    (INIT_FACTORS, sub-blocks) are scratch."""
    nsub = vals.shape[0]
    big = 0.0
    for j in range(nsub):
        if abs(vals[j]) > abs(big):
            big = vals[j]
    out[:] = 0
    if big == 0.0:
        return 0.0
    end = lo if lo < 0 and -lo >= hi else hi
    Ds, e, a, b, ej = tmp[-5], tmp[-4], tmp[-3], tmp[-2], tmp[-1]  # the rows before are group_errors'
    nc = 0
    for f in INIT_FACTORS:
        D = np.float64(fp16_round(F32(big / end / f)))
        if D == 0.0 or not np.isfinite(D):
            continue
        Ds[nc] = D
        for j in range(nsub):
            cints[nc, j] = max(lo, min(hi, np.int64(np.round(vals[j] / D))))
        nc += 1
    # every candidate's error, summed over the sub-blocks in order
    for c in range(nc):
        e[c] = 0.0
    for j in range(nsub):
        for c in range(nc):
            if is_min:
                a[c] = other * other_sc[j]
                b[c] = Ds[c] * cints[c, j]
            else:
                a[c] = Ds[c] * cints[c, j]
                b[c] = other * other_sc[j]
        group_errors(x, w, j * sub, sub, a, b, nc, qlo, qhi, table, ej, tmp)
        for c in range(nc):
            e[c] += ej[c]
    best = np.inf
    bD = 0.0
    for c in range(nc):
        if e[c] < best:
            best = e[c]
            bD = Ds[c]
            for j in range(nsub):
                out[j] = cints[c, j]
    return bD


@jit
def refine_superblock(x, w, sub, dsub, msub, sc, sc_lo, sc_hi, mn, mn_lo, mn_hi, has_min, qlo, qhi, table, q, iters):
    """One super-block ``x``/``w`` (contiguous views) of ``len(dsub)`` sub-blocks of ``sub`` values with float
    scales ``dsub`` (and mins ``msub`` >= 0), decoded as x̂ = f32(D·sc_j)·v(q) − f32(Dm·mn_j).  Writes the integer
    scales ``sc`` (and mins ``mn``) and returns the fp16 ``(D, Dm)``; ``q`` (int64, len(x)) is scratch."""
    nsub = dsub.shape[0]
    tmp = scratch(sub)
    cints = np.empty((len(INIT_FACTORS), nsub), np.int64)
    for j in range(nsub):
        mn[j] = 0
    Dm = 0.0
    if has_min:  # first the mins against a max-based scale, then the scales, then the mins again
        big = 0.0
        for j in range(nsub):
            big = max(big, dsub[j])
        D0 = np.float64(fp16_round(F32(big / sc_hi)))
        for j in range(nsub):
            sc[j] = max(sc_lo, min(sc_hi, np.int64(np.round(dsub[j] / D0)))) if D0 > 0.0 else 0
        Dm = _init_super(x, w, sub, msub, mn_lo, mn_hi, D0, sc, True, qlo, qhi, table, mn, tmp, cints)
    D = _init_super(x, w, sub, dsub, sc_lo, sc_hi, Dm, mn, False, qlo, qhi, table, sc, tmp, cints)
    if has_min:
        Dm = _init_super(x, w, sub, msub, mn_lo, mn_hi, D, sc, True, qlo, qhi, table, mn, tmp, cints)
    fs = np.empty((5, max(nsub, 8)))  # the sub-block errors, and each sub-block's candidates (float, int)
    errs = fs[0, :nsub]
    terrs = fs[4, :nsub]  # the sub-block errors for trial super-block scales
    ca_f = fs[1]
    cb_f = fs[2]
    cand_e = fs[3]
    cand = np.empty((2, 8), np.int64)
    cand_a = cand[0]
    cand_b = cand[1]
    qt = np.empty(x.shape[0], np.int64)
    total = 0.0
    for j in range(nsub):
        errs[j] = group_error(x, w, j * sub, sub, D * sc[j], Dm * mn[j], qlo, qhi, table, q)
        total += errs[j]
    stale = np.ones(nsub, np.bool_)  # sub-blocks whose inputs changed since their candidates were last scored
    for _ in range(iters):
        before = total
        # integer sub-block scales (and mins) for the current super-block scales
        for j in range(nsub):
            if not stale[j]:  # same quants and super-block scales: the same candidates, and again no change
                continue
            stale[j] = False
            o = j * sub
            sw = 0.0
            sv = 0.0
            svv = 0.0
            sx = 0.0
            sxv = 0.0
            for i in range(o, o + sub):
                wi = np.float64(w[i])
                v = _value(q[i], table)
                sw += wi
                sv += wi * v
                svv += wi * v * v
                sx += wi * x[i]
                sxv += wi * x[i] * v
            if has_min:
                det = sw * svv - sv * sv
                if det <= 0.0:
                    continue
                a = (sw * sxv - sv * sx) / det
                bneg = (svv * sx - sv * sxv) / det  # x ≈ a·v + bneg, stored min = −bneg
                ta = a / D if D != 0.0 else 0.0
                tb = -bneg / Dm if Dm != 0.0 else 0.0
            else:
                if svv <= 0.0:
                    continue
                ta = sxv / svv / D if D != 0.0 else 0.0
                tb = 0.0
            fa = np.int64(np.floor(ta))
            fb = np.int64(np.floor(tb))
            nc = 0  # the candidate (scale, min) pairs, each once, without the current one
            for ca in (fa, fa + 1, sc[j] - 1, sc[j] + 1):
                ca = max(sc_lo, min(sc_hi, ca))
                for kb in range(2 if has_min else 1):
                    cb = max(mn_lo, min(mn_hi, fb + kb)) if has_min else mn[j]
                    fresh = not (ca == sc[j] and cb == mn[j])
                    for t in range(nc):
                        if cand_a[t] == ca and cand_b[t] == cb:
                            fresh = False
                    if fresh:
                        cand_a[nc] = ca
                        cand_b[nc] = cb
                        ca_f[nc] = D * ca
                        cb_f[nc] = Dm * cb
                        nc += 1
            group_errors(x, w, o, sub, ca_f, cb_f, nc, qlo, qhi, table, cand_e, tmp)
            best = errs[j]
            bs = sc[j]
            bm = mn[j]
            for t in range(nc):
                if cand_e[t] < best:
                    best = cand_e[t]
                    bs = cand_a[t]
                    bm = cand_b[t]
            if bs != sc[j] or bm != mn[j]:
                stale[j] = True
                sc[j] = bs
                mn[j] = bm
                total += best - errs[j]
                errs[j] = best
                group_error(x, w, o, sub, D * bs, Dm * bm, qlo, qhi, table, q)
        # least-squares super-block scales for these integer scales and quants
        s_aa = 0.0
        s_ab = 0.0
        s_bb = 0.0
        s_xa = 0.0
        s_xb = 0.0
        for j in range(nsub):
            for i in range(j * sub, (j + 1) * sub):
                wi = np.float64(w[i])
                fa_ = sc[j] * _value(q[i], table)
                fb_ = -np.float64(mn[j])
                s_aa += wi * fa_ * fa_
                s_ab += wi * fa_ * fb_
                s_bb += wi * fb_ * fb_
                s_xa += wi * x[i] * fa_
                s_xb += wi * x[i] * fb_
        nD = D
        nDm = Dm
        if has_min:
            det = s_aa * s_bb - s_ab * s_ab
            if det > 0.0:
                nD = (s_bb * s_xa - s_ab * s_xb) / det
                nDm = (s_aa * s_xb - s_ab * s_xa) / det
        elif s_aa > 0.0:
            nD = s_xa / s_aa
        nD = np.float64(fp16_round(F32(nD)))
        nDm = np.float64(fp16_round(F32(nDm)))
        if (nD != D or nDm != Dm) and np.isfinite(nD) and np.isfinite(nDm) and (not has_min or nDm >= 0.0):
            e = 0.0
            for j in range(nsub):
                terrs[j] = group_error(x, w, j * sub, sub, nD * sc[j], nDm * mn[j], qlo, qhi, table, qt)
                e += terrs[j]
            if e < total:
                D = nD
                Dm = nDm
                total = e
                errs[:] = terrs
                q[:] = qt
                stale[:] = True
        if total >= before * (1.0 - SETTLED):
            break
    return D, Dm


@leaf
def refine_block_scale(x, w, d, m, has_min, qlo, qhi, table, q, tmp):
    """An fp16 scale (and fp16 offset x ≈ d·q + m) for one block: the rounded solution and its fp16 neighbours,
    quants re-derived for each; returns the best (d, m) and writes its quants to ``q``.  ``tmp``: a
    :func:`scratch` for len(x) values."""
    n = x.shape[0]
    d16 = F32(np.float64(fp16_round(F32(d))))
    m16 = F32(np.float64(fp16_round(F32(m))))
    a, b, e = tmp[-3], tmp[-2], tmp[-1]
    nc = 0
    for kd in range(3):
        cd = _fp16_neighbour(d16, kd)
        for km in range(3 if has_min else 1):
            a[nc] = np.float64(cd)  # x ≈ cd·v + cm  ==  a·v − b with a = cd, b = −cm
            b[nc] = -np.float64(_fp16_neighbour(m16, km)) if has_min else 0.0
            nc += 1
    group_errors(x, w, 0, n, a, b, nc, qlo, qhi, table, e, tmp)
    pick = 0
    for c in range(1, nc):
        if e[c] < e[pick]:
            pick = c
    group_error(x, w, 0, n, a[pick], b[pick], qlo, qhi, table, q)
    return a[pick], -b[pick]


@jit
def _fp16_neighbour(v16, k):
    """k = 0: the fp16 value v16 itself; 1 / 2: the fp16 values one step larger / smaller in magnitude."""
    h = np.int64(fp32_to_fp16(v16))
    if k == 0 or (h & 0x7C00) == 0x7C00:
        return v16
    sign = h & 0x8000
    mag = h & 0x7FFF
    mag = mag + 1 if k == 1 else max(mag - 1, 0)
    if mag >= 0x7C00:
        return v16
    return fp16_to_fp32(sign | mag)
