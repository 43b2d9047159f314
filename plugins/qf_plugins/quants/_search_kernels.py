"""Scale searches of ggml-quants.c (make_qx_quants, make_q3_quants, make_qp_quants, make_qkx2_quants /
make_qkx3_quants), byte-exact with ggml.

All helpers are ``@inline`` and work on one group of ``n`` values ``x[xo:xo+n]`` (offsets rather than slices: a
slice costs reference counting in the hot loop).  ``L[lo:lo+n]`` receives the chosen quants as ggml stores them.

Speed: ggml tries its candidate scales one after the other, each a chain of dependent float additions.  The
``*_fast`` searches evaluate all candidates side by side, one SIMD lane per candidate, while each candidate's sums
are still accumulated in element order — so every float operation, and the result, is the same as ggml's.  Their
float scratch is one flat array ``S`` (rows of ``NQ`` lanes at constant offsets, so the compiler can see the rows do
not overlap and vectorize).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from qf.numerics import F32, f32_bits

GROUP_MAX_EPS = F32(1e-15)
MAGIC = F32(12582912.0)  # 1.5·2**23: |v| < 2**22 plus MAGIC is v rounded half-to-even, exactly representable
BOUND = F32(4.0e6)  # below 4194303, where (v + MAGIC) - MAGIC equals ggml's nearest_int(v)
NQ = 40  # SIMD lanes of the fast searches (>= 37 candidates, whole AVX vectors)

# IEEE float semantics for x/0 (inf/nan, as in C) instead of numba's default ZeroDivisionError: ggml divides by
# values that can be zero or overflow on degenerate input (e.g. 1/iscale when max - min overflows to inf).
jit = nb.njit(cache=True, nogil=True, error_model="numpy")
inline = nb.njit(cache=True, nogil=True, inline="always", error_model="numpy")


@inline
def nint(fval):
    """ggml's ``nearest_int`` as C computes it for every input: the low mantissa bits of ``fval + 12582912.f``."""
    return np.int32(f32_bits(fval + MAGIC) & np.uint32(0x007FFFFF)) - np.int32(0x00400000)


@inline
def rint_clamp(v, lo, hi):
    """``max(lo, min(hi, nearest_int(v)))`` as a float, for |v| < BOUND (branch-free, vectorizes)."""
    return min(max((v + MAGIC) - MAGIC, lo), hi)


# ---------------------------------------------------------------------------------------------------------------------
# make_qx_quants: symmetric, x ≈ d·l, l in [-nmax, nmax)


@inline
def make_qx_quants(n, nmax, x, xo, L, lo, qw, wo, S):
    """make_qx_quants(n, nmax, x, L, rmse_type=1, qw): RTN from the max, then 18 more inverse scales
    ``-(nmax + 0.1·is)/max``; the fit maximizing (Σwxl)²/Σwl² wins (strictly, first wins ties).

    Returns the scale and writes ``L[lo+i]`` in ``[0, 2·nmax)`` (quant + nmax).  ggml's ``qw == NULL`` case weighs
    by ``x*x``: pass those weights explicitly.  Here |iscale·x| <= nmax + 1, so float rounding is always exact.
    ``S``: float32 scratch of at least ``3·NQ``.
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
    fnmax = F32(nmax)
    flo = F32(-nmax)
    fhi = F32(nmax - 1)
    # S rows: 0 inverse scales (candidate 0 is is=0, then is = -9..-1, 1..9), 1 Σwxl, 2 Σwl²
    for c in range(NQ):
        is_ = c - 10 if c < 10 else c - 9
        S[c] = -(fnmax + F32(0.1) * F32(is_)) / mx if c < 19 else F32(0.0)
        S[NQ + c] = F32(0.0)
        S[2 * NQ + c] = F32(0.0)
    S[0] = -fnmax / mx
    for i in range(n):
        xi = x[xo + i]
        w = qw[wo + i]
        wx = w * xi
        for c in range(24):
            fl = rint_clamp(S[c] * xi, flo, fhi)
            S[NQ + c] += wx * fl
            S[2 * NQ + c] += w * fl * fl
    sumlx = S[NQ]
    suml2 = S[2 * NQ]
    scale = sumlx / suml2 if suml2 != F32(0.0) else F32(0.0)
    best = scale * sumlx
    best_c = 0
    for c in range(1, 19):
        sumlx = S[NQ + c]
        suml2 = S[2 * NQ + c]
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
        l = max(-nmax, min(nmax - 1, nint(iscale * xi)))
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
                new_l = max(-nmax, min(nmax - 1, nint(xi * sl2 / slx)))
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


@inline
def make_qp_quants(n, nmax, x, L, qw):
    """make_qp_quants: 9 inverse scales by weighted MSE, then up to 5 rounds of coordinate descent.

    Returns the scale; ``L[i]`` holds what C's ``uint8_t L[]`` holds (so negative inputs wrap as they do there).
    """
    mx = F32(0.0)
    for i in range(n):
        mx = mx if mx > x[i] else x[i]
    if mx < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return F32(0.0)
    iscale = F32(nmax) / mx
    for i in range(n):
        L[i] = nint(iscale * x[i]) & 0xFF
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
            l = min(nmax, nint(iscale_is * x[i]))
            diff = x[i] - scale_is * F32(l)
            mse += qw[i] * diff * diff
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_is
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        l = min(nmax, nint(iscale * x[i]))
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
                new_l = min(nmax, nint(x[i] * sl2 / slx))
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
    return sumlx / suml2 if suml2 > F32(0.0) else F32(0.0)


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
        l = max(0, min(nmax, nint(iscale * (xi - mn))))
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
            l = max(0, min(nmax, nint(iscale * (xi - mn))))
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


@inline
def make_qkx_quants_fast(n, nmax, x, xo, weights, wo, L, lo, Laux, rmin, rdelta, nstep, use_mad, S):
    """:func:`make_qkx_quants` with the candidates in SIMD lanes; bit-identical.

    An accepted fit moves ``min``, so the candidates after it are evaluated again from there.  Falls back to the
    scalar steps when ``iscale·(x - min)`` could leave the range where float rounding equals ``nearest_int``
    (ranges that overflow or are subnormal).  ``S``: float32 scratch of ``(8 + n)·NQ``.
    """
    mn, mx, sum_w, sum_x, xmin = _qkx_prologue(n, x, xo, weights, wo)
    if mx <= mn:
        for i in range(n):
            L[lo + i] = 0
        return F32(0.0), -mn
    scale, best_error = _qkx_first(n, nmax, x, xo, weights, wo, L, lo, mn, mx, use_mad)
    fnmax = F32(nmax)
    zero = F32(0.0)
    nc = nstep + 1
    # S rows: 0 inverse scales, 1 Σwl, 2 Σwl², 3 Σwlx, 4 D, 5 scale, 6 min, 7 error, 8.. the quants (n rows)
    start = 0
    while start < nc:
        rng = mx - mn
        c0 = start - start % 8
        isc_max = F32(0.0)
        for c in range(c0, NQ):
            v = (rmin + rdelta * F32(c) + fnmax) / rng if c < nc else zero
            S[c] = v
            isc_max = max(isc_max, abs(v))
            S[NQ + c] = zero
            S[2 * NQ + c] = zero
            S[3 * NQ + c] = zero
            S[7 * NQ + c] = zero
        if not (isc_max * max(abs(rng), abs(xmin - mn)) < BOUND):
            return _qkx_steps(n, nmax, x, xo, weights, wo, L, lo, Laux, rmin, rdelta, nstep, use_mad, start, mn, mx,
                              sum_w, sum_x, scale, best_error)
        for i in range(n):
            xi = x[xo + i]
            xm = xi - mn
            w = weights[wo + i]
            row = (8 + i) * NQ
            for c in range(c0, NQ):
                fl = rint_clamp(S[c] * xm, zero, fnmax)
                S[row + c] = fl
                wl = w * fl
                S[NQ + c] += wl
                S[2 * NQ + c] += wl * fl
                S[3 * NQ + c] += wl * xi
        for c in range(c0, NQ):
            sl = S[NQ + c]
            sl2 = S[2 * NQ + c]
            sxl = S[3 * NQ + c]
            d = sum_w * sl2 - sl * sl
            this_scale = (sum_w * sxl - sum_x * sl) / d
            this_min = (sl2 * sum_x - sl * sxl) / d
            if this_min > zero:
                this_min = zero
                this_scale = sxl / sl2
            S[4 * NQ + c] = d
            S[5 * NQ + c] = this_scale
            S[6 * NQ + c] = this_min
        for i in range(n):
            xi = x[xo + i]
            w = weights[wo + i]
            row = (8 + i) * NQ
            for c in range(c0, NQ):
                diff = S[5 * NQ + c] * S[row + c] + S[6 * NQ + c] - xi
                diff = abs(diff) if use_mad else diff * diff
                S[7 * NQ + c] += w * diff
        moved = False
        c = start
        while c < nc:
            if S[4 * NQ + c] > zero and S[7 * NQ + c] < best_error:
                best_error = S[7 * NQ + c]
                scale = S[5 * NQ + c]
                for i in range(n):
                    L[lo + i] = np.int32(S[(8 + i) * NQ + c])
                if f32_bits(S[6 * NQ + c]) != f32_bits(mn):
                    mn = S[6 * NQ + c]
                    moved = True
                    break
            c += 1
        if not moved:
            break
        start = c + 1
    return scale, -mn
