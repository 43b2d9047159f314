"""The base class of quant-type kernels ("codecs").

A codec turns float32 rows into a type's bytes and back.  The ``ggml`` strategy (``Strategy.native``) calls the
type's own reference search, :meth:`Codec.quantize_native`.  Any other strategy goes through the type's search
problem: :meth:`Codec.pose` describes the blocks to fit, the strategy's solver for that problem kind solves them,
:meth:`Codec.pack` writes the solution in the type's layout.  So a new strategy works with every type that poses a
problem it solves, and a new type works with every strategy, without either knowing the other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qf.errors import InvalidWeightsError
from qf.values import BlockProblem, BlockSolution, QuantType, Strategy


class Codec:
    """One quant type's kernels.  A codec is built from its :class:`QuantType` (``Codec(qtype, ...)``), so the
    type's sizes are stated once, in the type; subclasses add only their algorithm's parameters.

    Subclasses implement :meth:`quantize_native` and :meth:`dequantize`; :meth:`pose`/:meth:`pack` for generic
    strategies.  Inputs are validated by :func:`qf.quantize_rows` before they get here: ``x`` is C-contiguous
    float32 ``(rows, n_per_row)`` with ``n_per_row`` a multiple of the block size, all finite; ``imatrix`` is None or
    finite float32 ``(n_per_row,)``; :meth:`quantize_scanned` is what callers use for the native search."""

    def __init__(self, qtype: QuantType) -> None:
        self.qtype = qtype

    @property
    def nrows(self) -> int:
        """Rows quantized together (:attr:`QuantType.row_group`)."""
        return self.qtype.row_group

    @property
    def name(self) -> str:
        return self.qtype.name

    @property
    def block_size(self) -> int:
        return self.qtype.block_size

    @property
    def type_size(self) -> int:
        return self.qtype.type_size

    def output(self, x: np.ndarray) -> np.ndarray:
        """An empty uint8 ``(rows, row_bytes)`` array for the quantized rows of ``x``."""
        return np.empty((x.shape[0], self.qtype.row_bytes(x.shape[1])), np.uint8)

    def quantize(self, x: np.ndarray, imatrix: np.ndarray | None, strategy: Strategy) -> np.ndarray:
        if strategy.native:
            return self.quantize_native(x, imatrix)
        problem = self.pose(x, imatrix)
        return self.pack(x, imatrix, problem, strategy.solve(problem))

    def quantize_native(self, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def quantize_scanned(self, x: np.ndarray, imatrix: np.ndarray | None) -> tuple[np.ndarray, float]:
        """The native search on rows not yet checked: ``(bytes, max |x|)``, raising on NaN/Inf.  A codec whose kernel
        reads every value anyway overrides this to fuse the scan into that pass (see :func:`ensure_finite`)."""
        amax = check_finite(x)
        return self.quantize_native(x, imatrix), amax

    def dequantize(self, data: np.ndarray, n_per_row: int) -> np.ndarray:
        raise NotImplementedError

    def pose(self, x: np.ndarray, imatrix: np.ndarray | None) -> BlockProblem:
        raise NotImplementedError(f"{type(self).__name__} poses no search problem for generic strategies")

    def pack(self, x: np.ndarray, imatrix: np.ndarray | None, problem: BlockProblem, solution: BlockSolution) -> Any:
        raise NotImplementedError(f"{type(self).__name__} cannot pack a generic solution")

    def alternatives(self, x: np.ndarray, imatrix: np.ndarray | None) -> list[np.ndarray]:
        """Other searches' results for ``x`` in this type's bytes (e.g. ik_llama.cpp's own search for a mainline
        type), whose blocks a strategy that keeps native (:attr:`Strategy.keeps_native`) also keeps wherever they have
        the smaller weighted error: such a strategy is then per block never worse than any of them.  Never used by the
        native strategy.  Default: none."""
        return []

    def invalid_rows(self, data: np.ndarray) -> tuple[np.ndarray, str] | None:
        """Rows of quantized ``data`` that llama.cpp's ``ggml_validate_row_data`` refuses for a reason other than a
        non-finite decoded value (checked for every type where an overflow is possible), and that reason — e.g.
        MXFP4's reserved E8M0 exponent 255.  Called on every result, so it must be cheap; None: nothing to check."""
        return None


NONFINITE_BITS = 0x7F800000


def check_finite(x: np.ndarray, what: str = "input") -> float:
    """The largest |x| of float32 rows ``x``; :class:`InvalidWeightsError` naming the row and column of the first
    NaN/Inf, if any (``what`` names the rows; the error's ``row`` attribute is that row)."""
    from qf.kernels import scan_rows

    row, col, amax = scan_rows(x)
    if row >= 0:
        raise non_finite_error(x, int(row), int(col), what)
    return float(amax)


def non_finite_error(x: np.ndarray, row: int, col: int, what: str = "input") -> InvalidWeightsError:
    """The error for the NaN/Inf at ``x[row, col]``, with ``row`` and ``column`` attributes."""
    error = InvalidWeightsError(f"{what}: non-finite value {x[row, col]} at row {row}, column {col}")
    error.row, error.column = row, col
    return error


def ensure_finite(x: np.ndarray, top_bits: int) -> float:
    """For a kernel that reported the largest ``bits & 0x7FFFFFFF`` it read in ``x``: that value as a float (the
    largest |x|), or the error of :func:`check_finite` if it is NaN/Inf."""
    top_bits = int(top_bits)
    if top_bits >= NONFINITE_BITS:
        return check_finite(x)
    return float(np.array(top_bits, np.uint32).view(np.float32))


def blocks(x: np.ndarray, block_size: int) -> np.ndarray:
    """View ``(rows, n_per_row)`` as ``(rows * n_blocks, block_size)`` (no copy for contiguous input)."""
    return x.reshape(-1, block_size)


def importance(x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """What generic strategies minimise, Σw(x − x̂)²: w = the imatrix (ones without), broadcast over the rows.

    (ggml's own searches weigh by heuristics such as qw·sqrt(σ² + x²) or x²; a strategy that can find the optimum
    should be given the error that is actually measured.)"""
    if imatrix is None:
        return np.ones_like(x)
    return np.ascontiguousarray(np.broadcast_to(imatrix.astype(np.float32)[None, :], x.shape))


def keep_better_blocks(codec: Codec, x: np.ndarray, imatrix: np.ndarray | None, ours: np.ndarray,
                       *others: np.ndarray) -> np.ndarray:
    """``ours`` with every block replaced by the block, among ``ours`` and ``others``, of smallest importance-weighted
    error Σw(x − x̂)² (w as :func:`importance`; on a tie the earlier one stays; a non-finite error never wins over a
    finite one).  Each result is decoded once."""
    from qf.kernels import better_blocks

    qtype = codec.qtype
    n, k = x.shape
    nb = k // qtype.block_size
    w = np.empty(0, np.float32) if imatrix is None else np.ascontiguousarray(imatrix, np.float32)
    best = np.ascontiguousarray(codec.dequantize(ours, k))
    for other in others:
        theirs = codec.dequantize(other, k)
        better = better_blocks(x, w, best, theirs, qtype.block_size)
        if better.any():
            ours.reshape(n, nb, qtype.type_size)[better] = other.reshape(n, nb, qtype.type_size)[better]
            best.reshape(n, nb, qtype.block_size)[better] = theirs.reshape(n, nb, qtype.block_size)[better]
    return ours
