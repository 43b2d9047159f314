"""The base class of quant-type kernels ("codecs").

A codec turns float32 rows into a type's bytes and back.  The ``ggml`` strategy (``Strategy.native``) calls the
type's own reference search, :meth:`Codec.quantize_native`.  Any other strategy goes through the type's search
problem: :meth:`Codec.pose` describes the blocks to fit, the strategy's solver solves them, :meth:`Codec.pack` writes
the solution in the type's layout.  So a new strategy works with every type that poses a problem it solves, and a
new type works with every strategy, without either knowing the other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qf.model import BlockProblem, BlockSolution, QuantType, Strategy


class Codec:
    """Set ``checks_finite = True`` when :meth:`quantize_native` itself raises on NaN/Inf input (fused into its
    first pass, see :func:`ensure_finite`): :func:`qf.quantize_rows` then skips its separate scan.

    Subclasses implement :meth:`quantize_native` and :meth:`dequantize`; :meth:`pose`/:meth:`pack` for generic
    strategies.  Inputs are validated by :func:`qf.quantize_rows` before they get here: ``x`` is C-contiguous
    float32 ``(rows, n_per_row)`` with ``n_per_row`` a multiple of the block size, all finite; ``imatrix`` is None or
    finite float32 ``(n_per_row,)``."""

    checks_finite = False

    def quantize(self, x: np.ndarray, imatrix: np.ndarray | None, strategy: Strategy) -> np.ndarray:
        if strategy.native:
            return self.quantize_native(x, imatrix)
        problem = self.pose(x, imatrix)
        solution = strategy.load_solver().solve(problem)
        return self.pack(x, imatrix, problem, solution)

    def quantize_native(self, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def dequantize(self, data: np.ndarray, n_per_row: int) -> np.ndarray:
        raise NotImplementedError

    def pose(self, x: np.ndarray, imatrix: np.ndarray | None) -> BlockProblem:
        raise NotImplementedError(f"{type(self).__name__} poses no search problem for generic strategies")

    def pack(self, x: np.ndarray, imatrix: np.ndarray | None, problem: BlockProblem, solution: BlockSolution) -> Any:
        raise NotImplementedError(f"{type(self).__name__} cannot pack a generic solution")


NONFINITE_BITS = 0x7F800000


def check_finite(x: np.ndarray) -> None:
    """Raise the API's error (naming row and column) if ``x`` holds NaN or Inf."""
    from qf.api import check_rows_finite

    check_rows_finite(x)


def ensure_finite(x: np.ndarray, top_bits: int) -> None:
    """Raise the API's error for non-finite input, given the largest ``bits & 0x7FFFFFFF`` a kernel saw in ``x``."""
    if int(top_bits) >= NONFINITE_BITS:
        check_finite(x)


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


def keep_better_blocks(qtype: QuantType, codec: Codec, x: np.ndarray, imatrix: np.ndarray | None, ours: np.ndarray,
                       native: np.ndarray) -> np.ndarray:
    """``ours`` with every block replaced by ``native``'s where that has the smaller importance-weighted error
    Σw(x − x̂)² (w as :func:`importance`); a non-finite error never wins over a finite one."""
    from qf.kernels import better_blocks

    n, k = x.shape
    nb = k // qtype.block_size
    w = np.empty(0, np.float32) if imatrix is None else np.ascontiguousarray(imatrix, np.float32)
    better = better_blocks(x, w, codec.dequantize(ours, k), codec.dequantize(native, k), qtype.block_size)
    if better.any():
        ours.reshape(n, nb, qtype.type_size)[better] = native.reshape(n, nb, qtype.type_size)[better]
    return ours
