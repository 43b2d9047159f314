"""Scale searches shared by the legacy and K-quant kernels (ggml-quants.c: make_qx_quants, make_q3_quants,
make_qp_quants, make_qkx2_quants / make_qkx3_quants), byte-exact with ggml.

All helpers are ``@inline`` and work on one group of ``n`` values.  ``L`` receives the chosen quants as ggml stores
them (``make_qx_quants`` and ``make_q3_quants`` offset by ``nmax``; ``make_qp_quants`` as the ``uint8_t`` C writes).
"""

from __future__ import annotations

import numpy as np

from qf.numerics import F32, f32_bits, inline

GROUP_MAX_EPS = F32(1e-15)


@inline
def nint(fval):
    """ggml's ``nearest_int`` as C computes it for every input: the low mantissa bits of ``fval + 12582912.f``."""
    return np.int32(f32_bits(fval + F32(12582912.0)) & np.uint32(0x007FFFFF)) - np.int32(0x00400000)


@inline
def make_qx_quants(n, nmax, x, L, qw):
    """make_qx_quants(n, nmax, x, L, rmse_type=1, qw): symmetric scale search over 19 inverse scales.

    Returns the scale; writes ``L[i]`` in ``[0, 2*nmax)`` (quant + nmax).  ggml's ``qw == NULL`` case weighs by
    ``x*x``: pass those weights explicitly.
    """
    mx = F32(0.0)
    amax = F32(0.0)
    for i in range(n):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            mx = x[i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return F32(0.0)
    fnmax = F32(nmax)
    iscale = -fnmax / mx
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        l = max(-nmax, min(nmax - 1, nint(iscale * x[i])))
        L[i] = l + nmax
        fl = F32(l)
        w = qw[i]
        sumlx += w * x[i] * fl
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
            fl = F32(max(-nmax, min(nmax - 1, nint(iscale * x[i]))))
            w = qw[i]
            sumlx += w * x[i] * fl
            suml2 += w * fl * fl
        if suml2 > F32(0.0) and sumlx * sumlx > best * suml2:
            for i in range(n):
                L[i] = nmax + max(-nmax, min(nmax - 1, nint(iscale * x[i])))
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@inline
def make_q3_quants(n, nmax, x, L):
    """make_q3_quants(n, nmax, x, L, do_rmse=true): RTN from the max, then up to 5 rounds of coordinate descent
    weighted by ``x*x``.  Returns the scale; writes ``L[i]`` in ``[0, 2*nmax)``."""
    mx = F32(0.0)
    amax = F32(0.0)
    for i in range(n):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            mx = x[i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return F32(0.0)
    iscale = F32(-nmax) / mx
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        l = max(-nmax, min(nmax - 1, nint(iscale * x[i])))
        L[i] = l
        w = x[i] * x[i]
        fl = F32(l)
        sumlx += w * x[i] * fl
        suml2 += w * fl * fl
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            w = x[i] * x[i]
            fl = F32(L[i])
            slx = sumlx - w * x[i] * fl
            if slx > F32(0.0):
                sl2 = suml2 - w * fl * fl
                new_l = max(-nmax, min(nmax - 1, nint(x[i] * sl2 / slx)))
                if new_l != L[i]:
                    fn = F32(new_l)
                    slx += w * x[i] * fn
                    sl2 += w * fn * fn
                    if sl2 > F32(0.0) and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    for i in range(n):
        L[i] += nmax
    return sumlx / suml2 if suml2 > F32(0.0) else F32(0.0)


@inline
def make_qp_quants(n, nmax, x, L, qw):
    """make_qp_quants: quantize non-negative values (sub-block scales or mins) to ``[0, nmax]`` with weights.

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


@inline
def make_qkx_quants(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad):
    """make_qkx2_quants / make_qkx3_quants with weights (identical then): x ≈ scale·L + min, min ≤ 0.

    Tries ``nstep + 1`` inverse scales ``(rmin + rdelta·is + nmax) / (max - min)``, each followed by a weighted
    least-squares fit of scale and min; the error is weighted squared (or, with ``use_mad``, absolute) difference.
    Returns ``(scale, -min)``; writes ``L[i]`` in ``[0, nmax]``.
    """
    mn = x[0]
    mx = x[0]
    sum_w = weights[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < mn:
            mn = x[i]
        if x[i] > mx:
            mx = x[i]
        w = weights[i]
        sum_w += w
        sum_x += w * x[i]
    if mn > F32(0.0):
        mn = F32(0.0)
    if mx <= mn:
        for i in range(n):
            L[i] = 0
        return F32(0.0), -mn
    fnmax = F32(nmax)
    iscale = fnmax / (mx - mn)
    scale = F32(1.0) / iscale
    best_error = F32(0.0)
    for i in range(n):
        l = max(0, min(nmax, nint(iscale * (x[i] - mn))))
        L[i] = l
        diff = scale * F32(l) + mn - x[i]
        diff = abs(diff) if use_mad else diff * diff
        best_error += weights[i] * diff
    for is_ in range(nstep + 1):
        iscale = (rmin + rdelta * F32(is_) + fnmax) / (mx - mn)
        sum_l = F32(0.0)
        sum_l2 = F32(0.0)
        sum_xl = F32(0.0)
        for i in range(n):
            l = max(0, min(nmax, nint(iscale * (x[i] - mn))))
            Laux[i] = l
            w = weights[i]
            fl = F32(l)
            sum_l += w * fl
            sum_l2 += w * fl * fl
            sum_xl += w * fl * x[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > F32(0.0):
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > F32(0.0):
                this_min = F32(0.0)
                this_scale = sum_xl / sum_l2
            cur_error = F32(0.0)
            for i in range(n):
                diff = this_scale * F32(Laux[i]) + this_min - x[i]
                diff = abs(diff) if use_mad else diff * diff
                cur_error += weights[i] * diff
            if cur_error < best_error:
                for i in range(n):
                    L[i] = Laux[i]
                best_error = cur_error
                scale = this_scale
                mn = this_min
    return scale, -mn
