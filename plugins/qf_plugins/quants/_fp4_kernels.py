"""numba kernels for the fp4 (e2m1) types MXFP4 (E8M0 scale per 32) and NVFP4 (UE4M3 scale per 16, blocks of 64).

Byte-exact with ggml's ``quantize_row_mxfp4_ref`` / ``quantize_row_nvfp4_ref`` (the imatrix is ignored).  ``x`` is
float32 ``(rows, n_per_row)``, ``out`` uint8 ``(rows, row_bytes)``.

Both store 4-bit codes into ``kvalues_fp4`` = 2·e2m1 = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, ..., -12) and a "half"
scale d, so that x ≈ d·kvalues[code].  ggml's ``best_index_mxfp4`` scans the 16 codes for the least
``|kvalues[i]·d - x|`` (first wins).  With d >= 0 every product is exact, and between two neighbouring levels both
differences are exact too (Sterbenz: the gaps never exceed the smaller level, and the 0/1 gap only rounds on the side
that loses anyway), so the scan equals "count the midpoints 0.5, 1.5, 2.5, 3.5, 5, 7, 10 (times d) that |x| exceeds
strictly", negative codes for x < 0.  Beyond 16·d (a clamped NVFP4 scale) or for d = 0 or d huge we run ggml's scan
itself, where rounding of the differences does decide.
"""

from __future__ import annotations

import numpy as np

from qf.kernels import F32, bits_f32, f32_bits, inline, jit

MX_QK = 32
MX_BYTES = 17
NV_QK = 64
NV_SUB = 16
NV_BYTES = 36

KVALUES = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int8)
KVALUES_F = KVALUES.astype(np.float32)
MIDPOINTS = np.array([0.5, 1.5, 2.5, 3.5, 5.0, 7.0, 10.0], np.float32)
_FAST_MAX_D = F32(2.0**120)  # below this 16·d and every midpoint·d are finite


def _ue4m3_table() -> np.ndarray:
    """ggml_ue4m3_to_fp32 for every byte: the UE4M3 value (bias 7, subnormals man·2^-9) times 0.5; 0 for 0x00/0x7F."""
    codes = np.arange(256)
    exp = (codes >> 3) & 0xF
    man = (codes & 7).astype(np.float64)
    raw = np.where(exp == 0, man * 2.0**-9, (1.0 + man / 8.0) * 2.0 ** (exp - 7.0))
    raw[(codes == 0) | (codes == 0x7F)] = 0.0
    return (raw * 0.5).astype(np.float32)


UE4M3_HALF = _ue4m3_table()
UE4M3_MAX_CODE = 0x7E  # values rise with the code up to here (0x7F decodes to 0)


# ---------------------------------------------------------------------------------------------------------------------
# scales


@inline
def e8m0_to_fp32_half(e):
    """ggml_e8m0_to_fp32_half: 2**(e - 128) (subnormal for e < 2)."""
    if e < 2:
        return bits_f32(np.uint32(0x00200000) << np.uint32(e))
    return bits_f32(np.uint32(e - 1) << np.uint32(23))


@inline
def floor_log2f(a):
    """floorf(log2f(a)) for finite a > 0, as glibc computes it.  Within a binade it is the exponent, except just below
    the next power of two where log2f rounds up to it; there (and for subnormals) take the double logarithm rounded to
    float32, which agrees with glibc's log2f's floor for every positive float32 (checked exhaustively)."""
    b = f32_bits(a)
    exp = np.int64(b >> np.uint32(23))
    if exp > 0 and (b & np.uint32(0x7FFFFF)) < np.uint32(0x7FFF00):
        return exp - 127
    return np.int64(np.floor(F32(np.log2(np.float64(a)))))


@inline
def mxfp4_exponent(amax):
    """The E8M0 byte ggml stores: (uint8_t)(floorf(log2f(amax)) - 2 + 127) (low byte of the int), 0 for amax = 0."""
    if amax > F32(0.0):
        return (floor_log2f(amax) + 125) & 0xFF
    return 0


@inline
def fp32_to_ue4m3(x):
    """ggml_fp32_to_ue4m3: nearest UE4M3 code (mantissa rounded half up), clamped to 448."""
    if not (x > F32(0.0)):
        return 0
    if x > F32(448.0):
        x = F32(448.0)
    bits = np.int64(f32_bits(x))
    ue_exp = ((bits >> 23) & 0xFF) - 127 + 7
    if ue_exp <= 0:
        man = np.int64(x * F32(512.0) + F32(0.5))
        if man > 7:
            man = 7
        if man < 1:
            return 0
        return man
    if ue_exp >= 15:
        return 0x7E
    man = ((bits >> 20) & 7) + ((bits >> 19) & 1)
    if man > 7:
        man = 0
        ue_exp += 1
        if ue_exp >= 15:
            return 0x7E
    return (ue_exp << 3) | man


# ---------------------------------------------------------------------------------------------------------------------
# codes


@jit
def best_index_scan(v, d):
    """ggml's best_index_mxfp4 as written (the first code with the least |kvalues·d - v|)."""
    best = 0
    err = abs(KVALUES_F[0] * d - v)
    for i in range(1, 16):
        e = abs(KVALUES_F[i] * d - v)
        if e < err:
            best = i
            err = e
    return best


@inline
def _thresholds(d, t):
    """Midpoints times d; returns the |x| up to which the midpoint count is exact (-1: scan every element)."""
    for i in range(7):
        t[i] = MIDPOINTS[i] * d
    if d > F32(0.0) and d <= _FAST_MAX_D:
        return F32(16.0) * d
    return F32(-1.0)


@inline
def fp4_code(v, d, t, limit):
    a = abs(v)
    if a <= limit:
        m = 0
        for i in range(7):
            m += a > t[i]
        if v < F32(0.0) and m > 0:
            m += 8
        return m
    if a == F32(0.0):
        return 0
    return best_index_scan(v, d)


@jit
def check_fp4_code(v, d):
    """For tests: the fast code and ggml's scan for values v (array) at scale d; returns the first mismatch or -1."""
    t = np.empty(7, np.float32)
    limit = _thresholds(d, t)
    for j in range(v.shape[0]):
        if fp4_code(v[j], d, t, limit) != best_index_scan(v[j], d):
            return j
    return -1


@inline
def _amax(x, r, base, n):
    m = np.uint32(0)
    for j in range(n):
        m = max(m, f32_bits(x[r, base + j]) & np.uint32(0x7FFFFFFF))
    return bits_f32(m)


@inline
def _fast_code(v, t):
    """fp4_code for |v| <= limit, without branches (so that the loop vectorizes)."""
    a = abs(v)
    m = (np.uint8(a > t[0]) + np.uint8(a > t[1]) + np.uint8(a > t[2]) + np.uint8(a > t[3]) + np.uint8(a > t[4])
         + np.uint8(a > t[5]) + np.uint8(a > t[6]))
    return m | ((np.uint8(v < F32(0.0)) & np.uint8(m > 0)) << 3)


@inline
def _write_codes(x, r, base, half, d, amax, out, o, t):
    """Codes of x[base : base + 2·half] (largest magnitude amax) at scale d: byte j holds element j (low nibble) and
    element j + half (high)."""
    limit = _thresholds(d, t)
    if amax <= limit:
        for j in range(half):
            out[r, o + j] = _fast_code(x[r, base + j], t) | (_fast_code(x[r, base + half + j], t) << 4)
        return
    for j in range(half):
        lo = fp4_code(x[r, base + j], d, t, limit)
        hi = fp4_code(x[r, base + half + j], d, t, limit)
        out[r, o + j] = lo | (hi << 4)


# ---------------------------------------------------------------------------------------------------------------------
# native (ggml) quantization


@jit
def quantize_mxfp4(x, out):
    n, k = x.shape
    t = np.empty(7, np.float32)
    for r in range(n):
        for ib in range(k // MX_QK):
            base = ib * MX_QK
            o = ib * MX_BYTES
            amax = _amax(x, r, base, MX_QK)
            e = mxfp4_exponent(amax)
            out[r, o] = e
            _write_codes(x, r, base, MX_QK // 2, e8m0_to_fp32_half(e), amax, out, o + 1, t)


@jit
def quantize_nvfp4(x, out):
    n, k = x.shape
    t = np.empty(7, np.float32)
    for r in range(n):
        for ib in range(k // NV_QK):
            o = ib * NV_BYTES
            for s in range(NV_QK // NV_SUB):
                base = ib * NV_QK + s * NV_SUB
                amax = _amax(x, r, base, NV_SUB)
                ue = fp32_to_ue4m3(amax / F32(6.0))
                out[r, o + s] = ue
                _write_codes(x, r, base, NV_SUB // 2, UE4M3_HALF[ue], amax, out, o + 4 + s * (NV_SUB // 2), t)


# ---------------------------------------------------------------------------------------------------------------------
# packing of generic solutions: round |d| to one of the two neighbouring representable scales (the one whose
# re-derived codes fit the block better, by the problem's weights; ties to the smaller), re-derive the codes


@inline
def _block_error(x, w, r, base, n, d, t):
    limit = _thresholds(d, t)
    err = 0.0
    for j in range(n):
        v = x[r, base + j]
        diff = np.float64(v) - np.float64(KVALUES_F[fp4_code(v, d, t, limit)]) * np.float64(d)
        err += np.float64(w[r, base + j]) * diff * diff
    return err


@inline
def _floor_pow2(a):
    """(k, exact) with 2**k <= a < 2**(k+1) for finite a > 0; exact when a is a power of two."""
    b = np.int64(f32_bits(a))
    exp = b >> 23
    man = b & 0x7FFFFF
    if exp > 0:
        return exp - 127, man == 0
    k = -150
    m = man
    while m > 0:
        m >>= 1
        k += 1
    return k, (man & (man - 1)) == 0


@jit
def pack_mxfp4(x, w, d, out):
    """d: float32 (rows, blocks) solution scales for the doubled table; stored as E8M0 2**(e-128), e in [0, 254]."""
    n, nb = d.shape
    t = np.empty(7, np.float32)
    for r in range(n):
        for ib in range(nb):
            base = ib * MX_QK
            o = ib * MX_BYTES
            a = abs(d[r, ib])
            e = 0
            if a > F32(0.0):
                k, exact = _floor_pow2(a)
                e = min(254, max(0, k + 128))
                e_hi = min(254, max(0, k + 129))
                if not exact and e_hi != e:
                    lo = _block_error(x, w, r, base, MX_QK, e8m0_to_fp32_half(e), t)
                    hi = _block_error(x, w, r, base, MX_QK, e8m0_to_fp32_half(e_hi), t)
                    if hi < lo:
                        e = e_hi
            out[r, o] = e
            _write_codes(x, r, base, MX_QK // 2, e8m0_to_fp32_half(e), _amax(x, r, base, MX_QK), out, o + 1, t)


@jit
def pack_nvfp4(x, w, d, out):
    """d: float32 (rows, sub-blocks of 16) solution scales for the doubled table; stored as UE4M3 codes."""
    n, nsub = d.shape
    t = np.empty(7, np.float32)
    for r in range(n):
        for isub in range(nsub):
            base = isub * NV_SUB
            ib = isub // (NV_QK // NV_SUB)
            s = isub % (NV_QK // NV_SUB)
            o = ib * NV_BYTES
            a = abs(d[r, isub])
            code = 0  # largest code whose value is <= a
            while code < UE4M3_MAX_CODE and UE4M3_HALF[code + 1] <= a:
                code += 1
            if UE4M3_HALF[code] != a and code < UE4M3_MAX_CODE:
                lo = _block_error(x, w, r, base, NV_SUB, UE4M3_HALF[code], t)
                hi = _block_error(x, w, r, base, NV_SUB, UE4M3_HALF[code + 1], t)
                if hi < lo:
                    code += 1
            out[r, o + s] = code
            amax = _amax(x, r, base, NV_SUB)
            _write_codes(x, r, base, NV_SUB // 2, UE4M3_HALF[code], amax, out, o + 4 + s * (NV_SUB // 2), t)


# ---------------------------------------------------------------------------------------------------------------------
# dequantization (ggml's dequantize_row_mxfp4 / nvfp4)


@jit
def dequantize_mxfp4(data, k, out):
    n = data.shape[0]
    for r in range(n):
        for ib in range(k // MX_QK):
            o = ib * MX_BYTES
            d = e8m0_to_fp32_half(np.int64(data[r, o]))
            base = ib * MX_QK
            for j in range(MX_QK // 2):
                b = data[r, o + 1 + j]
                out[r, base + j] = KVALUES_F[b & 0xF] * d
                out[r, base + MX_QK // 2 + j] = KVALUES_F[b >> 4] * d


@jit
def dequantize_nvfp4(data, k, out):
    n = data.shape[0]
    for r in range(n):
        for ib in range(k // NV_QK):
            o = ib * NV_BYTES
            for s in range(NV_QK // NV_SUB):
                d = UE4M3_HALF[data[r, o + s]]
                base = ib * NV_QK + s * NV_SUB
                for j in range(NV_SUB // 2):
                    b = data[r, o + 4 + s * (NV_SUB // 2) + j]
                    out[r, base + j] = KVALUES_F[b & 0xF] * d
                    out[r, base + NV_SUB // 2 + j] = KVALUES_F[b >> 4] * d
