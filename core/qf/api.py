"""Row-level public API: :func:`quantize_rows` and :func:`dequantize_rows`."""

from __future__ import annotations

import time

import numpy as np

from qf.codec import check_finite, keep_better_blocks, non_finite_error
from qf.errors import ImatrixError, InvalidWeightsError, UsageError, check_interrupted
from qf.plugins import get_registry
from qf.values import QuantType, Strategy

#: the largest finite fp16 value: rows beyond it can overflow a type's 16-bit scales
FP16_MAX = 65504.0


def check_rows(qtype: QuantType, x: np.ndarray, what: str = "input", scan: bool = True) -> np.ndarray:
    """Validate and normalise rows: 2-D, real floating point, C-contiguous float32, row length a multiple of the
    block, all finite (``scan=False`` leaves the finiteness check to a codec that fuses it into its kernel)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise InvalidWeightsError(f"{what}: expected a 2-D array (rows, n_per_row), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise InvalidWeightsError(f"{what}: expected floating-point values, got {x.dtype}")
    if x.shape[1] == 0 or x.shape[1] % qtype.block_size:
        raise InvalidWeightsError(
            f"{what}: row length {x.shape[1]} is not a multiple of {qtype.name}'s block size {qtype.block_size}"
        )
    if np.iscomplexobj(x) or not np.isrealobj(x):
        raise InvalidWeightsError(f"{what}: expected real values, got {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if scan and x.size:
        check_finite(x, what)
    return x


def check_imatrix(imatrix: np.ndarray | None, n_per_row: int, what: str = "imatrix") -> np.ndarray | None:
    """An importance vector as float32 ``(n_per_row,)``: finite, not negative."""
    if imatrix is None:
        return None
    try:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
    except (TypeError, ValueError):
        raise ImatrixError(f"{what}: expected an array of {n_per_row} floats, got {type(imatrix).__name__}") from None
    if imatrix.shape != (n_per_row,):
        raise ImatrixError(f"{what}: has shape {imatrix.shape}, expected ({n_per_row},) to match the rows")
    bad = np.flatnonzero(~np.isfinite(imatrix) | (imatrix < 0))
    if bad.size:
        raise ImatrixError(f"{what}: invalid value {imatrix[bad[0]]} at index {bad[0]} (must be finite and >= 0)")
    return imatrix


def resolve(type_name: str | QuantType, strategy: str | Strategy | None) -> tuple[QuantType, Strategy]:
    """The type and the strategy (None: the native one) of a row-level call."""
    registry = get_registry()
    qtype = type_name if isinstance(type_name, QuantType) else registry.quant_type(type_name)
    if strategy is None:
        strat = registry.native_strategy()
    else:
        strat = strategy if isinstance(strategy, Strategy) else registry.strategy(strategy)
    if not strat.supports(qtype):
        supported = ", ".join(s.name for s in registry.strategies.values() if s.supports(qtype))
        raise UsageError(
            f"strategy {strat.name!r} does not support {qtype.name} (it poses {', '.join(qtype.problems) or 'no'}"
            f" problem(s); strategies that do: {supported})"
        )
    return qtype, strat


#: Python runs signal handlers (Ctrl-C, SIGTERM: clean up and exit) only between kernel calls, so rows go to the
#: kernels in calls of about this many seconds: the first call takes FIRST_CALL_VALUES values, each next one is
#: sized from the last one's speed (a fast type ends up with a few calls per unit, a slow search with many)
CALL_SECONDS = 0.25
FIRST_CALL_VALUES = 1 << 16


def quantize_checked(qtype: QuantType, strat: Strategy, x: np.ndarray, imatrix: np.ndarray | None
                     ) -> tuple[np.ndarray, float]:
    """Quantize float32 C-contiguous rows whose shape and imatrix passed :func:`check_rows` (``scan=False``) /
    :func:`check_imatrix` (the executor's hot path): ``(bytes, max |x|)``, raising on NaN/Inf in ``x``.

    Rows are quantized independently (as in ggml), so they go to the codec in calls of bounded time (see
    :data:`CALL_SECONDS`): the bytes do not depend on how the rows are split."""
    n, k = x.shape
    group = qtype.row_group

    def whole(rows: int) -> int:
        return max(group, rows // group * group)

    rows = whole(FIRST_CALL_VALUES // max(1, k))
    if n <= rows:
        return _quantize_call(qtype, strat, x, imatrix)
    out = np.empty((n, qtype.row_bytes(k)), np.uint8)
    amax, r0 = 0.0, 0
    while r0 < n:
        check_interrupted()
        r1 = min(n, r0 + rows)
        start = time.perf_counter()
        try:
            out[r0:r1], part_max = _quantize_call(qtype, strat, x[r0:r1], imatrix)
        except InvalidWeightsError as exc:
            row = getattr(exc, "row", None)
            if row is None:
                raise
            raise non_finite_error(x, r0 + row, exc.column) from None  # named by its row in the whole
        amax = max(amax, part_max)
        seconds = time.perf_counter() - start
        rows = whole(int((r1 - r0) * min(CALL_SECONDS / max(seconds, 1e-6), 64.0)))
        r0 = r1
    return out, amax


def _quantize_call(qtype: QuantType, strat: Strategy, x: np.ndarray, imatrix: np.ndarray | None
                   ) -> tuple[np.ndarray, float]:
    if imatrix is not None and not qtype.uses_imatrix:
        imatrix = None
    codec = qtype.load_codec()
    if strat.native or not qtype.is_quantized:  # float types are conversions, whatever the strategy
        out, amax = codec.quantize_scanned(x, imatrix)
    else:
        amax = check_finite(x)
        out = codec.quantize(x, imatrix, strat)
        if strat.keeps_native:
            out = keep_better_blocks(codec, x, imatrix, out, codec.quantize_native(x, imatrix),
                                     *codec.alternatives(x, imatrix))
    expected = (x.shape[0], qtype.row_bytes(x.shape[1]))
    if out.shape != expected or out.dtype != np.uint8:
        raise RuntimeError(f"{qtype.name} codec returned {out.dtype}{out.shape}, expected uint8{expected}")
    return out, amax


#: importances above this can overflow float32 sums of w·x·x in a type's search, even for inputs within fp16
IMATRIX_OVERFLOW = 1e20


def check_scales(qtype: QuantType, x: np.ndarray, out: np.ndarray, amax: float, where,
                 imatrix: np.ndarray | None = None) -> None:
    """Rows with values beyond fp16, or importances huge enough to overflow float32 sums, can overflow a type's
    16-bit scales (or F16 itself): decode and refuse non-finite results, as llama.cpp's ``ggml_validate_row_data``
    does; and whatever else that validation refuses, as the codec reports it (:meth:`Codec.invalid_rows`).
    ``where(row)`` names a row for the message."""
    codec = qtype.load_codec()
    invalid = codec.invalid_rows(out)
    if invalid is not None and invalid[0].size:
        raise InvalidWeightsError(f"{invalid[1]} at {where(int(invalid[0][0]))} (llama.cpp refuses this too:"
                                  f" quantized data validation failed)")
    if amax <= FP16_MAX and (imatrix is None or not qtype.uses_imatrix or float(imatrix.max()) <= IMATRIX_OVERFLOW):
        return
    y = codec.dequantize(out, x.shape[1])
    bad = np.flatnonzero(~np.isfinite(y).all(axis=1))
    if bad.size:
        raise InvalidWeightsError(
            f"values up to {amax:g} overflow {qtype.name}'s 16-bit scales at {where(int(bad[0]))}"
            f" (llama.cpp refuses this too: quantized data validation failed)"
        )


def quantize_rows(
    type_name: str | QuantType,
    x: np.ndarray,
    imatrix: np.ndarray | None = None,
    strategy: str | Strategy | None = None,
) -> np.ndarray:
    """Quantize float rows ``(n, k)`` to ``type_name``; returns uint8 ``(n, row_bytes)``.

    With the default (native) strategy, ``ggml``, the bytes are those of llama.cpp's ``ggml_quantize_chunk`` for the
    same input.
    """
    qtype, strat = resolve(type_name, strategy)
    x = check_rows(qtype, x, scan=False)
    imatrix = check_imatrix(imatrix, x.shape[1])
    if imatrix is None and qtype.requires_imatrix:
        raise ImatrixError(f"{qtype.name} cannot be quantized without an importance matrix")
    out, amax = quantize_checked(qtype, strat, x, imatrix)
    check_scales(qtype, x, out, amax, lambda row: f"row {row}", imatrix)
    return out


def dequantize_rows(type_name: str | QuantType, data: np.ndarray, n_per_row: int) -> np.ndarray:
    """Decode uint8 rows ``(n, row_bytes)`` of ``type_name`` back to float32 ``(n, n_per_row)``."""
    registry = get_registry()
    qtype = type_name if isinstance(type_name, QuantType) else registry.quant_type(type_name)
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise InvalidWeightsError(f"{qtype.name}: expected uint8 bytes to decode, got {data.dtype}")
    if data.ndim == 1:
        data = data.reshape(1, -1)
    if not isinstance(n_per_row, (int, np.integer)) or n_per_row <= 0 or not qtype.fits(int(n_per_row)):
        raise InvalidWeightsError(f"{qtype.name}: cannot decode rows of {n_per_row!r} values (a positive multiple"
                                  f" of the block size {qtype.block_size} is needed)")
    expected = qtype.row_bytes(int(n_per_row))
    if data.ndim != 2 or data.shape[1] != expected:
        raise InvalidWeightsError(
            f"{qtype.name}: cannot decode rows of {data.shape[-1]} bytes as {n_per_row} values"
            f" (expected {expected} bytes per row)"
        )
    return qtype.load_codec().dequantize(np.ascontiguousarray(data), int(n_per_row))
