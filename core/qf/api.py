"""Row-level public API: :func:`quantize_rows` and :func:`dequantize_rows`."""

from __future__ import annotations

import numpy as np

from qf.codec import keep_better_blocks
from qf.errors import ImatrixError, InvalidWeightsError, UsageError
from qf.model import QuantType, Strategy
from qf.plugins import get_registry


def _first_nonfinite(x: np.ndarray) -> tuple[int, int]:
    from qf.kernels import scan_rows

    row, col, _ = scan_rows(x)
    return row, col


def check_rows(qtype: QuantType, x: np.ndarray, what: str = "input", scan: bool = True) -> np.ndarray:
    """Validate and normalise rows: 2-D, float32, C-contiguous, row length a multiple of the block, all finite
    (``scan=False`` leaves the finiteness check to a codec that fuses it into its kernel)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise InvalidWeightsError(f"{what}: expected a 2-D array (rows, n_per_row), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise InvalidWeightsError(f"{what}: expected floating-point values, got {x.dtype}")
    if x.shape[1] == 0 or x.shape[1] % qtype.block_size:
        raise InvalidWeightsError(
            f"{what}: row length {x.shape[1]} is not a multiple of {qtype.name}'s block size {qtype.block_size}"
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    if scan and x.size:
        check_rows_finite(x, what)
    return x


def check_rows_finite(x: np.ndarray, what: str = "input") -> None:
    row, col = _first_nonfinite(x)
    if row >= 0:
        raise InvalidWeightsError(f"{what}: non-finite value {x[row, col]} at row {row}, column {col}")


def check_imatrix(imatrix: np.ndarray | None, n_per_row: int, what: str = "imatrix") -> np.ndarray | None:
    if imatrix is None:
        return None
    imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
    if imatrix.shape != (n_per_row,):
        raise ImatrixError(f"{what}: has shape {imatrix.shape}, expected ({n_per_row},) to match the rows")
    bad = np.flatnonzero(~np.isfinite(imatrix))
    if bad.size:
        raise ImatrixError(f"{what}: non-finite value {imatrix[bad[0]]} at index {bad[0]}")
    return imatrix


def resolve(type_name: str | QuantType, strategy: str | Strategy) -> tuple[QuantType, Strategy]:
    registry = get_registry()
    qtype = type_name if isinstance(type_name, QuantType) else registry.quant_type(type_name)
    strat = strategy if isinstance(strategy, Strategy) else registry.strategy(strategy)
    if not strat.supports(qtype):
        supported = ", ".join(s.name for s in registry.strategies.values() if s.supports(qtype))
        raise UsageError(
            f"strategy {strat.name!r} does not support {qtype.name} (it poses {', '.join(qtype.problems) or 'no'}"
            f" problem(s); strategies that do: {supported})"
        )
    return qtype, strat


def quantize_checked(qtype: QuantType, strat: Strategy, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """Quantize rows that already passed :func:`check_rows` / :func:`check_imatrix` (the executor's hot path)."""
    if imatrix is not None and not qtype.uses_imatrix:
        imatrix = None
    codec = qtype.load_codec()
    out = codec.quantize(x, imatrix, strat)
    if strat.keeps_native and not strat.native and "copy" not in qtype.problems:
        out = keep_better_blocks(qtype, codec, x, imatrix, out, codec.quantize_native(x, imatrix))
    expected = (x.shape[0], qtype.row_bytes(x.shape[1]))
    if out.shape != expected or out.dtype != np.uint8:
        raise RuntimeError(f"{qtype.name} codec returned {out.dtype}{out.shape}, expected uint8{expected}")
    return out


def quantize_rows(
    type_name: str | QuantType,
    x: np.ndarray,
    imatrix: np.ndarray | None = None,
    strategy: str | Strategy = "ggml",
) -> np.ndarray:
    """Quantize float rows ``(n, k)`` to ``type_name``; returns uint8 ``(n, row_bytes)``.

    With ``strategy="ggml"`` the bytes are those of llama.cpp's ``ggml_quantize_chunk`` for the same input.
    """
    qtype, strat = resolve(type_name, strategy)
    fused = strat.native and getattr(qtype.load_codec(), "checks_finite", False)
    x = check_rows(qtype, x, scan=not fused)
    imatrix = check_imatrix(imatrix, x.shape[1])
    if imatrix is None and qtype.requires_imatrix:
        raise ImatrixError(f"{qtype.name} cannot be quantized without an importance matrix")
    return quantize_checked(qtype, strat, x, imatrix)


def dequantize_rows(type_name: str | QuantType, data: np.ndarray, n_per_row: int) -> np.ndarray:
    """Decode uint8 rows ``(n, row_bytes)`` of ``type_name`` back to float32 ``(n, n_per_row)``."""
    registry = get_registry()
    qtype = type_name if isinstance(type_name, QuantType) else registry.quant_type(type_name)
    data = np.ascontiguousarray(data, dtype=np.uint8)
    if data.ndim == 1:
        data = data.reshape(1, -1)
    expected = qtype.row_bytes(n_per_row) if qtype.fits(n_per_row) else None
    if data.ndim != 2 or expected is None or data.shape[1] != expected:
        raise InvalidWeightsError(
            f"{qtype.name}: cannot decode rows of {data.shape[-1]} bytes as {n_per_row} values"
            f" (expected {expected} bytes per row)"
        )
    return qtype.load_codec().dequantize(data, n_per_row)
