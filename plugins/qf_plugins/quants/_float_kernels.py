"""numba kernels for F16 and BF16 (one element per "block"), with the input's finiteness checked in the same pass.

Both conversions are written without branches (every path computed, then selected) so that the loops vectorize;
they return the largest |bits| seen, which the codec turns into an error if a value was NaN or Inf.
"""

from __future__ import annotations

import numpy as np

from qf.kernels import F32, bits_f32, f32_bits, inline, jit

ABS = np.uint32(0x7FFFFFFF)


@inline
def _half_bits(u):
    """IEEE binary16 bits of the float32 with bits ``u``: round to nearest even; NaN -> 0x7E00 | sign."""
    sign = (u >> np.uint32(16)) & np.uint32(0x8000)
    a = u & ABS
    normal = ((a - np.uint32(0x38000000)) + np.uint32(0x0FFF) + ((a >> np.uint32(13)) & np.uint32(1))) >> np.uint32(13)
    tiny = bits_f32(min(a, np.uint32(0x38800000)))  # below 2**-14 the half is subnormal: scale by 2**24, round
    sub = np.uint32(np.int32(np.rint(tiny * F32(16777216.0))))
    h = normal if a >= np.uint32(0x38800000) else sub
    h = np.uint32(0x7C00) if a >= np.uint32(0x477FF000) else h  # >= 65520 (and inf) rounds to infinity
    h = np.uint32(0x7E00) if a > np.uint32(0x7F800000) else h
    return np.uint16(sign | h)


@jit
def to_f16(x, out):
    """x float32 (n, k) -> out uint16 (n, k); returns max |bits| of x."""
    n, k = x.shape
    top = np.uint32(0)
    for r in range(n):
        xr = x[r]
        orow = out[r]
        for j in range(k):
            u = f32_bits(xr[j])
            top = max(top, u & ABS)
            orow[j] = _half_bits(u)
    return top


@jit
def to_bf16(x, out):
    """x float32 (n, k) -> out uint16 (n, k) as ggml_compute_fp32_to_bf16; returns max |bits| of x."""
    n, k = x.shape
    top = np.uint32(0)
    for r in range(n):
        xr = x[r]
        orow = out[r]
        for j in range(k):
            u = f32_bits(xr[j])
            a = u & ABS
            top = max(top, a)
            rounded = (u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)
            nan = (u >> np.uint32(16)) | np.uint32(64)
            orow[j] = np.uint16(nan if a > np.uint32(0x7F800000) else rounded)
    return top
