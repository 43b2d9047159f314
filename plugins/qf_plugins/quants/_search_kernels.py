"""Scale searches of ggml-quants.c (make_qx_quants, make_q3_quants, make_qp_quants, make_qkx2_quants /
make_qkx3_quants), byte-exact with ggml.

All helpers are ``@inline`` and work on one group of ``n`` values ``x[xo:xo+n]`` (offsets rather than slices: a
slice costs reference counting in the hot loop).  ``L[lo:lo+n]`` receives the chosen quants as ggml stores them.

Speed: ggml searches one group at a time, each candidate scale a chain of dependent float additions. The ``*_lanes``
searches run the same algorithm on up to ``GROUP_LANES`` independent groups at once, one SIMD lane per group: the data
is transposed (element ``i`` of lane ``l`` at ``[i*GROUP_LANES + l]``), every branch becomes a per-lane select, and each
lane performs exactly ggml's float operations in ggml's order, so the result is bit-identical. Per-lane state lives in
rows of one flat array at constant offsets (so the compiler can see that they do not overlap); callers read a lane's
outcome as a named :class:`LaneResult` (``qkx_result``, ``qx_result``, ``q3_result``). Where ggml's ``nearest_int``
could differ from float rounding (|v| >= 2**22, only on degenerate input) a lane is flagged ``bad`` and the caller
redoes that group with the scalar search. The lane searches are separate ``@jit`` functions (not inlined): compiled once
and shared by every kernel, which keeps compile times bearable.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from qf.kernels import F32, inline, jit, nearest_int

GROUP_MAX_EPS = F32(1e-15)
MAGIC = F32(12582912.0)  # 1.5·2**23: |v| < 2**22 plus MAGIC is v rounded half-to-even, exactly representable
BOUND = F32(4.0e6)  # below 4194303, where (v + MAGIC) - MAGIC equals ggml's nearest_int(v)
CANDIDATE_LANES = 40  # candidate scales scored side by side, one per SIMD lane (>= 37, whole AVX vectors)


@inline
def rint_clamp(v, lo, hi):
    """``max(lo, min(hi, nearest_int(v)))`` as a float, for |v| < BOUND (branch-free, vectorizes).  Always finite:
    nan gives ``lo`` (callers blend it away or flag the lane; it must not poison arithmetic blends)."""
    t = (v + MAGIC) - MAGIC
    t = t if t > lo else lo
    return t if t < hi else hi


# ---------------------------------------------------------------------------------------------------------------------
# make_qx_quants: symmetric, x ≈ d·l, l in [-nmax, nmax)


@inline
def _qx_scalar(n, nmax, x, xo, L, lo, qw, wo, mx):
    """make_qx_quants one candidate at a time with ggml's integer nearest_int (any input)."""
    fnmax = F32(nmax)
    iscale = -fnmax / mx
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        l = max(-nmax, min(nmax - 1, nearest_int(iscale * x[xo + i])))
        L[lo + i] = l + nmax
        fl = F32(l)
        w = qw[wo + i]
        sumlx += w * x[xo + i] * fl
        suml2 += w * fl * fl
    scale = sumlx / suml2 if suml2 != F32(0.0) else F32(0.0)
    best = scale * sumlx
    for is_ in range(-9, 10):
        if is_ == 0:
            continue
        iscale = -(fnmax + F32(0.1) * F32(is_)) / mx
        sumlx = F32(0.0)
        suml2 = F32(0.0)
        for i in range(n):
            fl = F32(max(-nmax, min(nmax - 1, nearest_int(iscale * x[xo + i]))))
            w = qw[wo + i]
            sumlx += w * x[xo + i] * fl
            suml2 += w * fl * fl
        if suml2 > F32(0.0) and sumlx * sumlx > best * suml2:
            for i in range(n):
                L[lo + i] = nmax + max(-nmax, min(nmax - 1, nearest_int(iscale * x[xo + i])))
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@jit
def make_qx_quants(n, nmax, x, xo, L, lo, qw, wo, S):
    """make_qx_quants(n, nmax, x, L, rmse_type=1, qw): RTN from the max, then 18 more inverse scales
    ``-(nmax + 0.1·is)/max``; the fit maximizing (Σwxl)²/Σwl² wins (strictly, first wins ties).

    Returns the scale and writes ``L[lo+i]`` in ``[0, 2·nmax)`` (quant + nmax).  ggml's ``qw == NULL`` case weighs
    by ``x*x``: pass those weights explicitly.  Here |iscale·x| <= nmax + 1, so float rounding is always exact.
    ``S``: float32 scratch of at least ``3·CANDIDATE_LANES``.
    """
    mx = F32(0.0)
    amax = F32(0.0)
    for i in range(n):
        ax = abs(x[xo + i])
        if ax > amax:
            amax = ax
            mx = x[xo + i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[lo + i] = 0
        return F32(0.0)
    finite = amax <= F32(3.4028234663852886e38)
    for i in range(n):
        finite &= x[xo + i] == x[xo + i]
    if not finite:  # inf/nan (scales of overflowing input): ggml's integer rounding of nan/inf
        return _qx_scalar(n, nmax, x, xo, L, lo, qw, wo, mx)
    fnmax = F32(nmax)
    flo = F32(-nmax)
    fhi = F32(nmax - 1)
    # S rows: 0 inverse scales (candidate 0 is is=0, then is = -9..-1, 1..9), 1 Σwxl, 2 Σwl²
    for c in range(CANDIDATE_LANES):
        is_ = c - 10 if c < 10 else c - 9
        S[c] = -(fnmax + F32(0.1) * F32(is_)) / mx if c < 19 else F32(0.0)
        S[CANDIDATE_LANES + c] = F32(0.0)
        S[2 * CANDIDATE_LANES + c] = F32(0.0)
    S[0] = -fnmax / mx
    for i in range(n):
        xi = x[xo + i]
        w = qw[wo + i]
        wx = w * xi
        for c in range(24):
            fl = rint_clamp(S[c] * xi, flo, fhi)
            S[CANDIDATE_LANES + c] += wx * fl
            S[2 * CANDIDATE_LANES + c] += w * fl * fl
    sumlx = S[CANDIDATE_LANES]
    suml2 = S[2 * CANDIDATE_LANES]
    scale = sumlx / suml2 if suml2 != F32(0.0) else F32(0.0)
    best = scale * sumlx
    best_c = 0
    for c in range(1, 19):
        sumlx = S[CANDIDATE_LANES + c]
        suml2 = S[2 * CANDIDATE_LANES + c]
        if suml2 > F32(0.0) and sumlx * sumlx > best * suml2:
            scale = sumlx / suml2
            best = scale * sumlx
            best_c = c
    iscale = S[best_c]
    for i in range(n):
        L[lo + i] = nmax + np.int32(rint_clamp(iscale * x[xo + i], flo, fhi))
    return scale


# ---------------------------------------------------------------------------------------------------------------------
# make_q3_quants: symmetric with coordinate descent


@inline
def make_q3_quants(n, nmax, x, xo, L, lo):
    """make_q3_quants(n, nmax, x, L, do_rmse=true): RTN from the max, then up to 5 rounds of coordinate descent
    weighted by ``x*x``.  Returns the scale; writes ``L[lo+i]`` in ``[0, 2·nmax)``."""
    mx = F32(0.0)
    amax = F32(0.0)
    for i in range(n):
        ax = abs(x[xo + i])
        if ax > amax:
            amax = ax
            mx = x[xo + i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[lo + i] = 0
        return F32(0.0)
    iscale = F32(-nmax) / mx
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        xi = x[xo + i]
        l = max(-nmax, min(nmax - 1, nearest_int(iscale * xi)))
        L[lo + i] = l
        w = xi * xi
        fl = F32(l)
        sumlx += w * xi * fl
        suml2 += w * fl * fl
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            xi = x[xo + i]
            w = xi * xi
            li = L[lo + i]
            fl = F32(li)
            slx = sumlx - w * xi * fl
            if slx > F32(0.0):
                sl2 = suml2 - w * fl * fl
                new_l = max(-nmax, min(nmax - 1, nearest_int(xi * sl2 / slx)))
                if new_l != li:
                    fn = F32(new_l)
                    slx += w * xi * fn
                    sl2 += w * fn * fn
                    if sl2 > F32(0.0) and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[lo + i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    for i in range(n):
        L[lo + i] += nmax
    return sumlx / suml2 if suml2 > F32(0.0) else F32(0.0)


# ---------------------------------------------------------------------------------------------------------------------
# make_qp_quants: non-negative values (sub-block scales or mins) to [0, nmax]


@jit
def make_qp_quants(n, nmax, x, L, qw):
    """make_qp_quants: 9 inverse scales by weighted MSE, then up to 5 rounds of coordinate descent.

    Returns the scale; ``L[i]`` holds what C's ``uint8_t L[]`` holds (so negative inputs wrap as they do there).
    """
    return qp_quants(n, nmax, x, L, qw, GROUP_MAX_EPS, True)


@inline
def qp_quants(n, nmax, x, L, qw, eps, guarded):
    """:func:`make_qp_quants` with its constants as arguments: ``eps`` (a max below it gives all-zero quants) and
    ``guarded`` (the final ``Σwxl / Σwl²`` is 0 when ``Σwl² <= 0``).  ik_llama.cpp's variant has eps 1e-16 and no
    guard (its division by zero gives inf/nan as C does)."""
    mx = F32(0.0)
    for i in range(n):
        mx = mx if mx > x[i] else x[i]
    if mx < eps:
        for i in range(n):
            L[i] = 0
        return F32(0.0)
    iscale = F32(nmax) / mx
    for i in range(n):
        L[i] = nearest_int(iscale * x[i]) & 0xFF
    scale = F32(1.0) / iscale
    best_mse = F32(0.0)
    for i in range(n):
        diff = x[i] - scale * F32(L[i])
        best_mse += qw[i] * diff * diff
    for is_ in range(-4, 5):
        if is_ == 0:
            continue
        iscale_is = (F32(0.1) * F32(is_) + F32(nmax)) / mx
        scale_is = F32(1.0) / iscale_is
        mse = F32(0.0)
        for i in range(n):
            l = min(nmax, nearest_int(iscale_is * x[i]))
            diff = x[i] - scale_is * F32(l)
            mse += qw[i] * diff * diff
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_is
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        l = min(nmax, nearest_int(iscale * x[i]))
        L[i] = l & 0xFF
        w = qw[i]
        fl = F32(l)
        sumlx += w * x[i] * fl
        suml2 += w * fl * fl
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            w = qw[i]
            fl = F32(L[i])
            slx = sumlx - w * x[i] * fl
            sl2 = suml2 - w * fl * fl
            if slx > F32(0.0) and sl2 > F32(0.0):
                new_l = min(nmax, nearest_int(x[i] * sl2 / slx))
                if new_l != L[i]:
                    fn = F32(new_l)
                    slx += w * x[i] * fn
                    sl2 += w * fn * fn
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l & 0xFF
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    if guarded and not suml2 > F32(0.0):
        return F32(0.0)
    return sumlx / suml2


# ---------------------------------------------------------------------------------------------------------------------
# make_qkx2_quants / make_qkx3_quants: asymmetric, x ≈ scale·l + min, l in [0, nmax], min <= 0


@inline
def _qkx_prologue(n, x, xo, weights, wo):
    """min (clamped to <= 0), max, Σw, Σw·x and the true minimum of x."""
    mn = x[xo]
    mx = x[xo]
    sum_w = weights[wo]
    sum_x = sum_w * x[xo]
    for i in range(1, n):
        xi = x[xo + i]
        if xi < mn:
            mn = xi
        if xi > mx:
            mx = xi
        w = weights[wo + i]
        sum_w += w
        sum_x += w * xi
    xmin = mn
    if mn > F32(0.0):
        mn = F32(0.0)
    return mn, mx, sum_w, sum_x, xmin


@inline
def _qkx_first(n, nmax, x, xo, weights, wo, L, lo, mn, mx, use_mad):
    """The plain RTN fit from [min, max]: writes L, returns (scale, weighted error)."""
    iscale = F32(nmax) / (mx - mn)
    scale = F32(1.0) / iscale
    best_error = F32(0.0)
    for i in range(n):
        xi = x[xo + i]
        l = max(0, min(nmax, nearest_int(iscale * (xi - mn))))
        L[lo + i] = l
        diff = scale * F32(l) + mn - xi
        diff = abs(diff) if use_mad else diff * diff
        best_error += weights[wo + i] * diff
    return scale, best_error


@inline
def _qkx_steps(n, nmax, x, xo, weights, wo, L, lo, Laux, rmin, rdelta, nstep, use_mad, start, mn, mx, sum_w, sum_x,
               scale, best_error):
    """Candidates ``start..nstep`` one at a time.  An accepted fit moves ``min``, which the following candidates'
    inverse scale and offsets then use (as in ggml)."""
    fnmax = F32(nmax)
    for is_ in range(start, nstep + 1):
        iscale = (rmin + rdelta * F32(is_) + fnmax) / (mx - mn)
        sum_l = F32(0.0)
        sum_l2 = F32(0.0)
        sum_xl = F32(0.0)
        for i in range(n):
            xi = x[xo + i]
            l = max(0, min(nmax, nearest_int(iscale * (xi - mn))))
            Laux[i] = l
            w = weights[wo + i]
            fl = F32(l)
            sum_l += w * fl
            sum_l2 += w * fl * fl
            sum_xl += w * fl * xi
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > F32(0.0):
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > F32(0.0):
                this_min = F32(0.0)
                this_scale = sum_xl / sum_l2
            cur_error = F32(0.0)
            for i in range(n):
                diff = this_scale * F32(Laux[i]) + this_min - x[xo + i]
                diff = abs(diff) if use_mad else diff * diff
                cur_error += weights[wo + i] * diff
            if cur_error < best_error:
                for i in range(n):
                    L[lo + i] = Laux[i]
                best_error = cur_error
                scale = this_scale
                mn = this_min
    return scale, -mn


@inline
def make_qkx_quants(n, nmax, x, xo, weights, wo, L, lo, Laux, rmin, rdelta, nstep, use_mad):
    """make_qkx2_quants / make_qkx3_quants with weights (the two are identical then), one candidate at a time.

    Tries ``nstep + 1`` inverse scales ``(rmin + rdelta·is + nmax) / (max - min)``, each followed by a weighted
    least-squares fit of scale and min; the error is the weighted squared (``use_mad``: absolute) difference.
    Returns ``(scale, -min)``; writes ``L[lo+i]`` in ``[0, nmax]``.  Scalar reference of
    :func:`make_qkx_quants_fast`.
    """
    mn, mx, sum_w, sum_x, xmin = _qkx_prologue(n, x, xo, weights, wo)
    if mx <= mn:
        for i in range(n):
            L[lo + i] = 0
        return F32(0.0), -mn
    scale, best_error = _qkx_first(n, nmax, x, xo, weights, wo, L, lo, mn, mx, use_mad)
    return _qkx_steps(n, nmax, x, xo, weights, wo, L, lo, Laux, rmin, rdelta, nstep, use_mad, 0, mn, mx, sum_w,
                      sum_x, scale, best_error)


# ---------------------------------------------------------------------------------------------------------------------
# lane-parallel searches (one group per SIMD lane; see the module docstring)

GROUP_LANES = 64  # groups searched side by side, one per SIMD lane: the row stride of the transposed data and state


@inline
def sel(c, a, b):
    """``a if c else b`` with both already evaluated (so that the compiler makes a branch-free select: a load
    inside a conditional branch would keep a loop from vectorizing)."""
    return a if c else b


@inline
def blend(t, a, b):
    """``a`` where ``t`` is 1, ``b`` where it is 0, as arithmetic: exact for finite values apart from the sign of a
    zero result (callers make sure that does not matter).  Unlike a select of a value loaded from the same place,
    LLVM cannot turn it into a masked store (very slow on AMD)."""
    return a * t + b * (F32(1.0) - t)


@inline
def _row(k):
    return k * GROUP_LANES


# state rows of qkx_lanes
_MN, _MX, _SW, _SX, _XMIN, _SCALE, _BEST, _ISC, _SL, _SL2, _SXL, _D, _TS, _TM, _ERR, _AISC, _AMN, _BAD = range(18)
QKX_ROWS = 18


@inline
def _qkx_bound(V, l, isc):
    """Flag lane l when iscale·(x - min) may leave the exact range of float rounding."""
    mn = V[_row(_MN) + l]
    span = max(abs(V[_row(_MX) + l] - mn), abs(V[_row(_XMIN) + l] - mn))
    ok = abs(isc) * span < BOUND
    V[_row(_BAD) + l] += F32(ok ^ True)


#: what a lane search found for one group: ``bad`` when ggml's integer rounding could differ from the lanes' float
#: rounding there (the caller redoes that group with the scalar search), the scale and the (negated) min
LaneResult = namedtuple("LaneResult", ("bad", "scale", "min"))


@inline
def qkx_result(V, lane):
    """:class:`LaneResult` of a lane after :func:`qkx_lanes` (``min`` as ggml's make_qkx_quants returns it, -min)."""
    return LaneResult(V[_row(_BAD) + lane] != F32(0.0), V[_row(_SCALE) + lane], V[_row(_MN) + lane])


@jit
def qkx_lanes(nl, n, nmax, XT, WT, rmin, rdelta, nstep, use_mad, V, LT):
    """make_qkx2/3_quants on ``nl`` groups of ``n`` at once (lanes of ``XT``/``WT``, weights given).

    Results per lane, read with :func:`qkx_result`: scale, min (<= 0) and ``bad`` (degenerate ranges: the group must
    be redone with :func:`make_qkx_quants`) from ``V`` (float32, ``QKX_ROWS·GROUP_LANES``); quants in ``LT``
    (float32, transposed like ``XT``).
    """
    zero = F32(0.0)
    one = F32(1.0)
    fnmax = F32(nmax)
    # ggml starts the sums at element 0; -0.0 + v is v for every v, so start from -0.0 and add element 0 too
    # (a loop from 1 would index through numba's negative-index wraparound and not vectorize)
    for l in range(nl):
        x0 = XT[l]
        V[_row(_MN) + l] = x0
        V[_row(_MX) + l] = x0
        V[_row(_SW) + l] = F32(-0.0)
        V[_row(_SX) + l] = F32(-0.0)
    for i in range(n):
        for l in range(nl):
            xi = XT[i * GROUP_LANES + l]
            w = WT[i * GROUP_LANES + l]
            mn = V[_row(_MN) + l]
            mx = V[_row(_MX) + l]
            V[_row(_MN) + l] = xi if xi < mn else mn
            V[_row(_MX) + l] = xi if xi > mx else mx
            V[_row(_SW) + l] += w
            V[_row(_SX) + l] += w * xi
    for l in range(nl):
        mn = V[_row(_MN) + l]
        V[_row(_XMIN) + l] = mn
        mn = zero if mn > zero else mn
        V[_row(_MN) + l] = mn
        mx = V[_row(_MX) + l]
        iscale = fnmax / (mx - mn)
        V[_row(_ISC) + l] = iscale
        V[_row(_SCALE) + l] = one / iscale
        V[_row(_BEST) + l] = zero
        V[_row(_AISC) + l] = iscale
        V[_row(_AMN) + l] = mn
        V[_row(_BAD) + l] = zero if mx > mn else one
        _qkx_bound(V, l, iscale)
    # the plain fit from [min, max]
    for i in range(n):
        for l in range(nl):
            xi = XT[i * GROUP_LANES + l]
            mn = V[_row(_MN) + l]
            fl = rint_clamp(V[_row(_ISC) + l] * (xi - mn), zero, fnmax)
            diff = V[_row(_SCALE) + l] * fl + mn - xi
            diff = abs(diff) if use_mad else diff * diff
            V[_row(_BEST) + l] += WT[i * GROUP_LANES + l] * diff
    for is_ in range(nstep + 1):
        step = rmin + rdelta * F32(is_) + fnmax
        for l in range(nl):
            iscale = step / (V[_row(_MX) + l] - V[_row(_MN) + l])
            V[_row(_ISC) + l] = iscale
            _qkx_bound(V, l, iscale)
            V[_row(_SL) + l] = zero
            V[_row(_SL2) + l] = zero
            V[_row(_SXL) + l] = zero
            V[_row(_ERR) + l] = zero
        for i in range(n):
            for l in range(nl):
                xi = XT[i * GROUP_LANES + l]
                w = WT[i * GROUP_LANES + l]
                fl = rint_clamp(V[_row(_ISC) + l] * (xi - V[_row(_MN) + l]), zero, fnmax)
                wl = w * fl
                V[_row(_SL) + l] += wl
                V[_row(_SL2) + l] += wl * fl
                V[_row(_SXL) + l] += wl * xi
        for l in range(nl):
            sum_w = V[_row(_SW) + l]
            sum_x = V[_row(_SX) + l]
            sl = V[_row(_SL) + l]
            sl2 = V[_row(_SL2) + l]
            sxl = V[_row(_SXL) + l]
            d = sum_w * sl2 - sl * sl
            this_scale = (sum_w * sxl - sum_x * sl) / d
            this_min = (sl2 * sum_x - sl * sxl) / d
            pos = this_min > zero
            V[_row(_D) + l] = d
            V[_row(_TS) + l] = sxl / sl2 if pos else this_scale
            V[_row(_TM) + l] = zero if pos else this_min
        for i in range(n):
            for l in range(nl):
                xi = XT[i * GROUP_LANES + l]
                fl = rint_clamp(V[_row(_ISC) + l] * (xi - V[_row(_MN) + l]), zero, fnmax)
                diff = V[_row(_TS) + l] * fl + V[_row(_TM) + l] - xi
                diff = abs(diff) if use_mad else diff * diff
                V[_row(_ERR) + l] += WT[i * GROUP_LANES + l] * diff
        for l in range(nl):
            err = V[_row(_ERR) + l]
            best = V[_row(_BEST) + l]
            take = (V[_row(_D) + l] > zero) & (err < best)
            mn = V[_row(_MN) + l]
            V[_row(_BEST) + l] = err if take else best
            V[_row(_SCALE) + l] = sel(take, V[_row(_TS) + l], V[_row(_SCALE) + l])
            V[_row(_AISC) + l] = sel(take, V[_row(_ISC) + l], V[_row(_AISC) + l])
            V[_row(_AMN) + l] = sel(take, mn, V[_row(_AMN) + l])
            V[_row(_MN) + l] = sel(take, V[_row(_TM) + l], mn)
    for i in range(n):
        for l in range(nl):
            v = V[_row(_AISC) + l] * (XT[i * GROUP_LANES + l] - V[_row(_AMN) + l])
            LT[i * GROUP_LANES + l] = rint_clamp(v, zero, fnmax)


# state rows of qx_lanes
_QMX, _QAMAX, _QISC, _QSLX, _QSL2, _QSCALE, _QBEST, _QAISC = range(8)
QX_ROWS = 8


@inline
def qx_result(V, lane):
    """:class:`LaneResult` of a lane after :func:`qx_lanes` (never ``bad``, no min)."""
    return LaneResult(False, V[_row(_QSCALE) + lane], F32(0.0))


@jit
def qx_lanes(nl, n, nmax, XT, WT, V, LT):
    """make_qx_quants(n, nmax, x, L, 1, w) on ``nl`` groups at once.  Scale per lane in row ``_QSCALE`` of ``V``
    (float32, ``QX_ROWS·GROUP_LANES``); ``LT`` gets the quants + nmax.  |iscale·x| <= nmax + 1 here: no lane is ever
    bad."""
    zero = F32(0.0)
    fnmax = F32(nmax)
    flo = F32(-nmax)
    fhi = F32(nmax - 1)
    for l in range(nl):
        V[_row(_QMX) + l] = zero
        V[_row(_QAMAX) + l] = zero
    for i in range(n):
        for l in range(nl):
            xi = XT[i * GROUP_LANES + l]
            ax = abs(xi)
            amax = V[_row(_QAMAX) + l]
            t = F32(ax > amax)
            V[_row(_QAMAX) + l] = ax * t + amax * (F32(1.0) - t)  # blend(): exact here, and no masked store
            V[_row(_QMX) + l] = blend(t, xi, V[_row(_QMX) + l])
    for c in range(19):
        is_ = 0 if c == 0 else (c - 10 if c < 10 else c - 9)
        step = fnmax + F32(0.1) * F32(is_)
        num = -fnmax if c == 0 else -step
        for l in range(nl):
            V[_row(_QISC) + l] = num / V[_row(_QMX) + l]
            V[_row(_QSLX) + l] = zero
            V[_row(_QSL2) + l] = zero
        for i in range(n):
            for l in range(nl):
                xi = XT[i * GROUP_LANES + l]
                w = WT[i * GROUP_LANES + l]
                fl = rint_clamp(V[_row(_QISC) + l] * xi, flo, fhi)
                V[_row(_QSLX) + l] += w * xi * fl
                V[_row(_QSL2) + l] += w * fl * fl
        if c == 0:
            for l in range(nl):
                sumlx = V[_row(_QSLX) + l]
                suml2 = V[_row(_QSL2) + l]
                scale = sumlx / suml2 if suml2 != zero else zero
                V[_row(_QSCALE) + l] = scale
                V[_row(_QBEST) + l] = scale * sumlx
                V[_row(_QAISC) + l] = V[_row(_QISC) + l]
        else:
            for l in range(nl):
                sumlx = V[_row(_QSLX) + l]
                suml2 = V[_row(_QSL2) + l]
                take = (suml2 > zero) & (sumlx * sumlx > V[_row(_QBEST) + l] * suml2)
                scale = sumlx / suml2
                V[_row(_QSCALE) + l] = sel(take, scale, V[_row(_QSCALE) + l])
                V[_row(_QBEST) + l] = sel(take, scale * sumlx, V[_row(_QBEST) + l])
                V[_row(_QAISC) + l] = sel(take, V[_row(_QISC) + l], V[_row(_QAISC) + l])
    for l in range(nl):
        if not (V[_row(_QAMAX) + l] >= GROUP_MAX_EPS):
            V[_row(_QSCALE) + l] = zero
    for i in range(n):
        for l in range(nl):
            q = rint_clamp(V[_row(_QAISC) + l] * XT[i * GROUP_LANES + l], flo, fhi) + fnmax
            LT[i * GROUP_LANES + l] = q * F32(V[_row(_QAMAX) + l] >= GROUP_MAX_EPS)


# state rows of q3_lanes
_3MX, _3AMAX, _3SLX, _3SL2, _3BAD, _3SCALE, _3CH = range(7)
Q3_ROWS = 7


@inline
def q3_result(V, lane):
    """:class:`LaneResult` of a lane after :func:`q3_lanes` (no min)."""
    return LaneResult(V[_row(_3BAD) + lane] != F32(0.0), V[_row(_3SCALE) + lane], F32(0.0))


@jit
def q3_lanes(nl, n, nmax, XT, V, LT):
    """make_q3_quants(n, nmax, x, L, true) on ``nl`` groups at once (weights x²): RTN, then coordinate descent in
    lock-step (a lane whose pass changed nothing would change nothing in later passes either, as in ggml's early
    exit).  Scale per lane in row ``_3SCALE``; ``LT`` gets quants + nmax; lanes with row ``_3BAD`` != 0 must be
    redone with :func:`make_q3_quants`."""
    zero = F32(0.0)
    fnmax = F32(nmax)
    flo = F32(-nmax)
    fhi = F32(nmax - 1)
    for l in range(nl):
        V[_row(_3MX) + l] = zero
        V[_row(_3AMAX) + l] = zero
        V[_row(_3SLX) + l] = zero
        V[_row(_3SL2) + l] = zero
        V[_row(_3BAD) + l] = zero
    for i in range(n):
        for l in range(nl):
            xi = XT[i * GROUP_LANES + l]
            ax = abs(xi)
            amax = V[_row(_3AMAX) + l]
            t = F32(ax > amax)
            V[_row(_3AMAX) + l] = ax * t + amax * (F32(1.0) - t)  # blend(): exact here, and no masked store
            V[_row(_3MX) + l] = blend(t, xi, V[_row(_3MX) + l])
    for l in range(nl):
        V[_row(_3MX) + l] = F32(-nmax) / V[_row(_3MX) + l]  # now the inverse scale
    for i in range(n):
        for l in range(nl):
            xi = XT[i * GROUP_LANES + l]
            fl = rint_clamp(V[_row(_3MX) + l] * xi, flo, fhi)
            LT[i * GROUP_LANES + l] = fl
            w = xi * xi
            V[_row(_3SLX) + l] += w * xi * fl
            V[_row(_3SL2) + l] += w * fl * fl
    for _ in range(5):
        for l in range(nl):
            V[_row(_3CH) + l] = zero
        for i in range(n):
            for l in range(nl):
                xi = XT[i * GROUP_LANES + l]
                w = xi * xi
                li = LT[i * GROUP_LANES + l]
                sumlx = V[_row(_3SLX) + l]
                suml2 = V[_row(_3SL2) + l]
                slx = sumlx - w * xi * li
                sl2 = suml2 - w * li * li
                v = xi * sl2 / slx
                pos = slx > zero
                inexact = (abs(v) < BOUND) ^ True  # also nan
                # flags via max, not a select of the old value (which LLVM may turn into a masked store: slow)
                V[_row(_3BAD) + l] += F32(pos & inexact)
                new_l = rint_clamp(v, flo, fhi)
                slx2 = slx + w * xi * new_l
                sl2b = sl2 + w * new_l * new_l
                # bitwise & (no short-circuit branches) so that the loop vectorizes
                take = pos & (new_l != li) & (sl2b > zero) & (slx2 * slx2 * suml2 > sumlx * sumlx * sl2b)
                LT[i * GROUP_LANES + l] = li + (new_l - li) * F32(take)  # small integers: exact
                V[_row(_3SLX) + l] = sel(take, slx2, sumlx)
                V[_row(_3SL2) + l] = sel(take, sl2b, suml2)
                V[_row(_3CH) + l] += F32(take)
        changed = False  # (a reduction inside the loop above would keep it from vectorizing)
        for l in range(nl):
            changed |= V[_row(_3CH) + l] != zero
        if not changed:
            break
    for l in range(nl):
        live = V[_row(_3AMAX) + l] >= GROUP_MAX_EPS
        sumlx = V[_row(_3SLX) + l]
        suml2 = V[_row(_3SL2) + l]
        V[_row(_3SCALE) + l] = sumlx / suml2 if live & (suml2 > zero) else zero
        V[_row(_3BAD) + l] *= F32(live)
    for i in range(n):
        for l in range(nl):
            LT[i * GROUP_LANES + l] = (LT[i * GROUP_LANES + l] + fnmax) * F32(V[_row(_3AMAX) + l] >= GROUP_MAX_EPS)


# compiled once, called (rarely) for the lanes flagged bad


@jit
def make_qkx_quants_jit(n, nmax, x, xo, weights, wo, L, lo, Laux, rmin, rdelta, nstep, use_mad):
    return make_qkx_quants(n, nmax, x, xo, weights, wo, L, lo, Laux, rmin, rdelta, nstep, use_mad)


@jit
def make_q3_quants_jit(n, nmax, x, xo, L, lo):
    return make_q3_quants(n, nmax, x, xo, L, lo)
