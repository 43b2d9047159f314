"""The public kernel library for plugin authors: numba building blocks for bit-exact quantization kernels (import it
from kernel modules only: it loads numba).

What is here: the decorators (``jit``, ``inline``, ``leaf``), float32 bit access (``f32_bits``, ``bits_f32``), fp16
and bf16 conversion and block-field access (``fp32_to_fp16``, ``fp16_to_fp32``, ``fp16_round``, ``put_f16``,
``get_f16``, ``put_f16_at``, ``get_f16_at``, ``fp32_to_bf16``, ``bf16_to_fp32``), C's rounding idioms (``nearest_int``,
``roundf``, ``trunc_to_int8``, ``c_max``), table lookup (``nearest_entry``; ik_llama.cpp's index-table lookup
``best_index_sub_after`` with ``index_table`` to build its table, and C's float-to-int cast ``c_int``), GGML_ASSERT's
stand-in (``ggml_assert``), the loop-bound hider ``opaque``, the row scans (``scan_rows``, ``better_blocks``), and
ik_llama.cpp's ``make_qx_quants`` (``make_qx_quants_ik``: ggml-quants.c's, with ik's second family of candidate scales
and one-quant-at-a-time refinement; shared by qf_plugins' ik alternatives and the qf-ik plugin).

Rules every kernel follows to reproduce ggml's float32 arithmetic exactly:

* keep every intermediate float32: write constants as ``F32(8.5)`` and cast integers with ``F32(i)`` before mixing
  them with floats (numba would otherwise promote to float64);
* keep C's evaluation order (``w*x*l`` is ``(w*x)*l``); no ``fastmath`` (which would also allow FMA contraction);
* use the helpers below for C's rounding idioms and fp16/bf16 conversion.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from importlib import metadata
from pathlib import Path

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

F32 = np.float32
# error_model="numpy": x/0 gives inf/nan as in C (the "python" model raises, and checks every division)
jit = nb.njit(cache=True, nogil=True, error_model="numpy")
inline = nb.njit(cache=True, nogil=True, inline="always", error_model="numpy")
# a kernel that allocates nothing and is called in inner loops: without numba's reference counting, whose atomic
# increments and decrements of every array argument on each call can cost more than a small kernel's work
leaf = nb.njit(cache=True, nogil=True, error_model="numpy", _nrt=False)


def _kernel_sources() -> list[Path]:
    """This module and the private (``_*.py``) modules of every package the ``qf`` entry points name."""
    files = [Path(__file__)]
    packages = sorted({ep.value.split(":")[0].split(".")[0] for ep in metadata.entry_points(group="qf")})
    for package in packages:
        spec = importlib.util.find_spec(package)
        for root in (spec.submodule_search_locations or []) if spec else []:
            files += sorted(p for p in Path(root).rglob("_*.py") if p.name != "__init__.py")
    return files


def cache_home() -> Path:
    """qf's folder for things it keeps between runs ($XDG_CACHE_HOME/qf, else ~/.cache/qf)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qf"


@functools.cache
def kernel_sources_digest() -> str | None:
    """A hash of every plugin's kernel sources (None if one cannot be read): what compiled kernels, and results
    computed with them, depend on."""
    digest = hashlib.sha256()
    for path in _kernel_sources():
        try:
            digest.update(path.read_bytes())
        except OSError:
            return None
    return digest.hexdigest()[:16]


def _use_versioned_cache() -> None:
    """Keep numba's on-disk cache in a folder named after a hash of the plugins' kernel sources.

    numba decides whether a cached kernel is stale from its own module's file only, so a change to a shared helper
    (this module, a plugin's search module) could otherwise leave stale machine code in use.  NUMBA_CACHE_DIR
    overrides."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    digest = kernel_sources_digest()
    if digest is None:
        return
    base = cache_home() / f"numba-{digest}"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    nb.config.CACHE_DIR = str(base)


_use_versioned_cache()


def _load_cached_kernels_without_refresh() -> None:
    """Load cached machine code without first installing numba's typing and lowering registries.

    numba calls ``target_context.refresh()`` before it looks a signature up in its on-disk cache.  That call imports
    about 100 modules and installs about 2000 templates, and costs 0.3 s of a run's start.  Loading machine code from
    the cache needs only the runtime (NRT), whose symbols the code links against.  Compiling refreshes anyway:
    numba's compiler pipeline refreshes both contexts in its constructor.  So a cache hit skips the refresh, and a
    miss compiles exactly as before.  If this numba's cache class does not have the methods named here, nothing
    is changed."""
    from numba.core.caching import Cache
    from numba.core.runtime import rtsys

    if not all(hasattr(Cache, name) for name in ("load_overload", "_load_overload",
                                                  "_guard_against_spurious_io_errors")):
        return

    def load_overload(self, sig, target_context):
        rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)

    Cache.load_overload = load_overload


_load_cached_kernels_without_refresh()


@intrinsic
def f32_bits(typingctx, x):
    """The IEEE bits of a float32 as uint32 (C's memcpy into an int)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def bits_f32(typingctx, u):
    """The float32 whose IEEE bits are the low 32 bits of integer ``u``."""
    if not isinstance(u, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        width = value.type.width
        if width > 32:
            value = builder.trunc(value, ir.IntType(32))
        elif width < 32:
            value = builder.zext(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(u), codegen


@intrinsic
def opaque(typingctx, n):
    """``n`` unchanged, but hidden from the optimizer (an empty inline-asm move).

    For a loop bound that is a small constant (a block size): LLVM fully unrolls such loops, and numba does not
    SLP-vectorize straight-line code, so the unrolled loop runs scalar; a bound the optimizer cannot see keeps the
    loop a loop, which the loop vectorizer handles."""
    if not isinstance(n, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = args[0]
        fnty = ir.FunctionType(value.type, [value.type])
        return builder.asm(fnty, "", "=r,0", [value], side_effect=False)

    return n(n), codegen


@inline
def fp32_to_fp16(f):
    """IEEE binary16 bits of float32 ``f``, round-to-nearest-even; NaN -> 0x7E00 | sign (as ggml)."""
    u = np.int64(f32_bits(f))
    sign = (u >> 16) & 0x8000
    a = u & 0x7FFFFFFF
    if a >= 0x7F800000:
        return np.uint16(sign | (0x7E00 if a > 0x7F800000 else 0x7C00))
    if a >= 0x477FF000:  # >= 65520 rounds to infinity
        return np.uint16(sign | 0x7C00)
    if a < 0x38800000:  # below 2**-14: a subnormal half; scaling by 2**24 is exact
        m = np.int64(np.rint(bits_f32(a) * F32(16777216.0)))
        return np.uint16(sign | m)
    e = (a >> 23) - 112
    mant = a & 0x7FFFFF
    r = mant >> 13
    rem = mant & 0x1FFF
    if rem > 0x1000 or (rem == 0x1000 and (r & 1) == 1):
        r += 1
    return np.uint16(sign | ((e << 10) + r))


@inline
def fp16_to_fp32(h):
    """float32 value of IEEE binary16 bits ``h`` (exact)."""
    h = np.int64(h)
    sign = (h & 0x8000) << 16
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0:
        v = F32(m) * F32(5.9604644775390625e-08)  # m * 2**-24, exact
        return -v if sign else v
    if e == 31:
        return bits_f32(sign | 0x7F800000 | (m << 13))
    return bits_f32(sign | ((e + 112) << 23) | (m << 13))


@inline
def fp16_round(f):
    """``f`` rounded to fp16 and back (GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(f)))."""
    return fp16_to_fp32(fp32_to_fp16(f))


@inline
def put_f16(out, r, o, value):
    """Store ``value`` as little-endian fp16 at ``out[r, o:o+2]`` (a ggml_half field of a block)."""
    h = fp32_to_fp16(value)
    out[r, o] = h & 0xFF
    out[r, o + 1] = h >> 8


@inline
def get_f16(data, r, o):
    """The float32 value of the little-endian fp16 at ``data[r, o:o+2]``."""
    return fp16_to_fp32(np.uint16(data[r, o]) | (np.uint16(data[r, o + 1]) << 8))


@jit
def put_f16_at(buf, o, value):
    """Store ``value`` as little-endian fp16 at ``buf[o:o+2]`` of a 1-D byte array (a block field of one row)."""
    h = fp32_to_fp16(value)
    buf[o] = h & 0xFF
    buf[o + 1] = (h >> 8) & 0xFF


@jit
def get_f16_at(buf, o):
    """The float32 value of the little-endian fp16 at ``buf[o:o+2]`` of a 1-D byte array."""
    return fp16_to_fp32(np.uint16(buf[o]) | (np.uint16(buf[o + 1]) << 8))


@inline
def fp32_to_bf16(f):
    """bfloat16 bits of ``f``: round-to-nearest-even, NaN -> quiet NaN (as ggml_compute_fp32_to_bf16)."""
    u = np.int64(f32_bits(f))
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return np.uint16((u >> 16) | 64)
    return np.uint16(((u + (0x7FFF + ((u >> 16) & 1))) >> 16) & 0xFFFF)


@inline
def bf16_to_fp32(h):
    return bits_f32(np.int64(h) << 16)


@inline
def nearest_int(fval):
    """ggml's ``nearest_int`` exactly as C computes it for every float32 input: the low 23 bits of
    ``fval + 12582912.f`` read as an integer, minus 2**22 (round half to even for |fval| <= 4194303; beyond that,
    what C's bit trick gives), without a branch."""
    return np.int32(f32_bits(fval + F32(12582912.0)) & np.uint32(0x007FFFFF)) - np.int32(0x00400000)


@inline
def roundf(f):
    """C ``roundf``: round half away from zero, as float32."""
    t = np.trunc(f)
    if np.abs(f - t) >= F32(0.5):
        t += F32(1.0) if f > F32(0.0) else F32(-1.0)
    return F32(t)


@inline
def c_max(a, b):
    """C's ``MAX(a, b)``: ``a > b ? a : b`` (NaN-order sensitive, unlike max())."""
    return a if a > b else b


@jit
def nearest_entry(v, table):
    """Index of the table entry nearest to ``v`` (ascending table; ties to the lower entry).  The entry at or below
    ``v`` is found by counting the inner entries at or below it, not by bisection: for the small tables of quant
    types that is a loop without unpredictable branches (it vectorises), several times faster."""
    nt = table.shape[0]
    if nt < 2:
        return 0
    lo = 0
    for k in range(1, nt - 1):
        lo += 1 if table[k] <= v else 0
    return lo if v - table[lo] <= table[lo + 1] - v else lo + 1


#: raised (as ValueError) by :func:`ggml_assert`; codecs turn it into qf's InvalidWeightsError
GGML_ASSERT_MESSAGE = "ggml's search fails on these values (float32 overflow): llama.cpp would abort here"


@inline
def ggml_assert(ok):
    """Where ggml's GGML_ASSERT would abort (a search that float32 overflow or NaN defeats), raise instead."""
    if not ok:
        raise ValueError(GGML_ASSERT_MESSAGE)


@inline
def trunc_to_int8(f):
    """C ``(int8_t)f`` for values in range: truncation toward zero."""
    return np.int64(np.trunc(f))


@jit
def scan_rows(x):
    """(row, column) of the first NaN/Inf in a 2-D float32 array, or (-1, -1); and the largest |x| (when finite)."""
    n, k = x.shape
    top = np.uint32(0)
    for i in range(n):
        row_top = np.uint32(0)
        for j in range(k):
            row_top = max(row_top, f32_bits(x[i, j]) & np.uint32(0x7FFFFFFF))
        if row_top >= np.uint32(0x7F800000):
            for j in range(k):
                if (f32_bits(x[i, j]) & np.uint32(0x7F800000)) == np.uint32(0x7F800000):
                    return i, j, F32(0.0)
        top = max(top, row_top)
    return -1, -1, bits_f32(top)


@jit
def better_blocks(x, imatrix, a, b, block):
    """Per block of ``block`` values of the rows ``x``: does ``b`` fit better than ``a``, i.e. is
    Σw(x − b)² < Σw(x − a)² with w = ``imatrix`` (ones when it is empty)?  A non-finite error never wins over a
    finite one (it counts as +inf)."""
    n, k = x.shape
    nb_ = k // block
    out = np.zeros((n, nb_), np.bool_)
    weighted = imatrix.shape[0] > 0
    for r in range(n):
        for j in range(nb_):
            ea = 0.0
            eb = 0.0
            for i in range(j * block, (j + 1) * block):
                xi = np.float64(x[r, i])
                da = xi - np.float64(a[r, i])
                db = xi - np.float64(b[r, i])
                wi = np.float64(imatrix[i]) if weighted else 1.0
                ea += wi * da * da
                eb += wi * db * db
            if not np.isfinite(ea):
                ea = np.inf
            if not np.isfinite(eb):
                eb = np.inf
            out[r, j] = eb < ea
    return out


# ---------------------------------------------------------------------------------------------------------------------
# ik_llama.cpp's helpers (its searches for mainline types differ from llama.cpp's; see qf_plugins' ik alternatives)

INT_MIN = -2147483648


def index_table(values) -> np.ndarray:
    """The lookup table of ik_llama.cpp's ``best_index_iq4nl``-style searches for ascending int8 ``values``: entry
    ``ix`` (for ``(int)x - values[0] == ix``) is the nearest value's index, or ``n + k`` ("compare values k and
    k+1") where the midpoint of values k and k+1 lies strictly between ``v - 1`` and ``v + 1``, ``v = ix + values[0]``
    (this rebuilds ik's ``iq4nl_index`` exactly)."""
    vals = np.asarray(values, np.int64)
    n = vals.shape[0]
    mids = (vals[:-1] + vals[1:]) / 2.0
    out = np.empty(int(vals[-1] - vals[0]) + 1, np.int16)
    for ix in range(out.shape[0]):
        v = ix + int(vals[0])
        between = np.flatnonzero((mids > v - 1) & (mids < v + 1))
        out[ix] = n + between[0] if between.size else int(np.argmin(np.abs(vals - v)))
    return out

@inline
def c_int(v):
    """C's ``(int)v`` for a float32 as x86-64 computes it (cvttss2si): truncation toward zero; NaN and values out of
    the int range give INT_MIN."""
    if not (v > F32(-2147483904.0) and v < F32(2147483648.0)):
        return INT_MIN
    return np.int64(v)


@inline
def best_index_sub_after(values, off, index, nidx, n, x):
    """ik's ``best_index_iq3nl/iq4nl/iq5nl(values + off, x)``: ``ix = (int)x - values[0]``, then the index table
    (an entry >= n means "between ix-n and ix-n+1, compare")."""
    ix = c_int(x) - np.int64(values[off])
    if ix < 0 or ix >= nidx:
        return 0 if ix < 0 else n - 1
    ix = np.int64(index[ix])
    if ix < n:
        return ix
    lo = values[off + ix - n]
    hi = values[off + ix - n + 1]
    return ix - n if x - F32(lo) < F32(hi) - x else ix - n + 1


@inline
def _qx_sums(n, nmax, x, xo, qw, iscale):
    sumlx = F32(0.0)
    suml2 = F32(0.0)
    for i in range(n):
        lv = nearest_int(iscale * x[xo + i])
        lv = max(-nmax, min(nmax - 1, lv))
        w = qw[i]
        sumlx += w * x[xo + i] * F32(lv)
        suml2 += w * F32(lv) * F32(lv)
    return sumlx, suml2


@inline
def _qx_fill(n, nmax, x, xo, L, iscale):
    for i in range(n):
        lv = nearest_int(iscale * x[xo + i])
        L[i] = nmax + max(-nmax, min(nmax - 1, lv))


@jit
def make_qx_quants_ik(n, nmax, x, xo, L, qw):
    """ik's ggml-quants.c ``make_qx_quants(n, nmax, x, L, rmse_type=1, qw)`` with qw given: the 19 scales
    −(nmax + 0.1·is)/max, the 19 scales (nmax − 1 + 0.1·is)/max, then single-step refinement of the quants.
    ``x`` is read from ``x[xo:xo+n]``; L gets the quants + nmax."""
    mx = F32(0.0)
    amax = F32(0.0)
    for i in range(n):
        ax = np.abs(x[xo + i])
        if ax > amax:
            amax = ax
            mx = x[xo + i]
    if amax < F32(1e-15):
        for i in range(n):
            L[i] = 0
        return F32(0.0)
    iscale = F32(-nmax) / mx
    sumlx, suml2 = _qx_sums(n, nmax, x, xo, qw, iscale)
    _qx_fill(n, nmax, x, xo, L, iscale)
    scale = sumlx / suml2 if suml2 != F32(0.0) else F32(0.0)
    best = scale * sumlx
    best_sumlx = sumlx
    best_suml2 = suml2
    for is_ in range(-9, 10):
        for iscale in (-(F32(nmax) + F32(0.1) * F32(is_)) / mx, (F32(nmax - 1) + F32(0.1) * F32(is_)) / mx):
            sumlx, suml2 = _qx_sums(n, nmax, x, xo, qw, iscale)
            if suml2 > F32(0.0) and sumlx * sumlx > best * suml2:
                _qx_fill(n, nmax, x, xo, L, iscale)
                scale = sumlx / suml2
                best = scale * sumlx
                best_sumlx = sumlx
                best_suml2 = suml2
    sumlx = best_sumlx
    suml2 = best_suml2
    for _ in range(n * (2 * nmax - 1)):
        abs_gmax = F32(0.0)
        gmax = F32(0.0)
        best_j = -1
        for j in range(n):
            w = qw[j]
            lv = np.int64(L[j]) - nmax
            g = scale * w * (x[xo + j] - scale * F32(lv))
            if (g > F32(0.0) and lv < nmax - 1) or (g < F32(0.0) and lv > -nmax):
                ag = np.abs(g)
                if ag > abs_gmax:
                    abs_gmax = ag
                    gmax = g
                    best_j = j
        if best_j < 0:
            break
        new_sumlx = sumlx
        new_suml2 = suml2
        w = qw[best_j]
        lv = np.int64(L[best_j]) - nmax
        if gmax > F32(0.0):
            new_sumlx += w * x[xo + best_j]
            new_suml2 += w * F32(2 * lv + 1)
            lv += 1
        else:
            new_sumlx -= w * x[xo + best_j]
            new_suml2 -= w * F32(2 * lv - 1)
            lv -= 1
        if new_suml2 > F32(0.0) and new_sumlx * new_sumlx > best * new_suml2:
            sumlx = new_sumlx
            suml2 = new_suml2
            scale = sumlx / suml2
            best = scale * sumlx
            L[best_j] = lv + nmax
        else:
            break
    return scale


