"""``exhaustive``: the exact least-squares optimum per block, by walking every scale breakpoint in order
(compilade's cumulative search, llama.cpp PR 12557).  See _exhaustive_kernels for the method."""

from __future__ import annotations

import numpy as np

from qf import BlockProblem, BlockSolution, Strategy, hookimpl
from qf.plugins import get_registry

#: widest integer range walked exhaustively (6 bits): the walk's cost grows with the range while its gain over the
#: gradient search vanishes, so wider problems (Q8_0) go to the strategy named here
WIDEST = 64
WIDE_RANGES = "gradient"


def _kernels():
    from qf_plugins.strategies import _exhaustive_kernels

    return _exhaustive_kernels


def _arrays(problem: BlockProblem):
    x = np.ascontiguousarray(problem.x, np.float32)
    w = np.ascontiguousarray(problem.w, np.float32)
    return x, w, np.empty(x.shape[0], np.float32), np.empty(x.shape, np.int32)


def symmetric(problem: BlockProblem) -> BlockSolution:
    if problem.qmax - problem.qmin > WIDEST:
        return get_registry().strategy(WIDE_RANGES).solve(problem)
    x, w, d, q = _arrays(problem)
    _kernels().symmetric(x, w, problem.qmin, problem.qmax, d, q)
    return BlockSolution(d, q)


def asymmetric(problem: BlockProblem) -> BlockSolution:
    x, w, d, q = _arrays(problem)
    m = np.empty(x.shape[0], np.float32)
    _kernels().asymmetric(x, w, problem.qmax, float(problem.offset_max), d, m, q)
    return BlockSolution(d, q, m)


def table(problem: BlockProblem) -> BlockSolution:
    x, w, d, q = _arrays(problem)
    _kernels().table(x, w, np.ascontiguousarray(problem.table, np.float32), d, q)
    return BlockSolution(d, q)


EXHAUSTIVE = Strategy(
    "exhaustive",
    solvers={kind: f"{__name__}:{kind}" for kind in ("symmetric", "asymmetric", "table")},
    keeps_native=True,
    description="exact optimum per block over every scale breakpoint (compilade's cumulative search); "
                f"ranges wider than {WIDEST} (Q8_0) go to {WIDE_RANGES}; per block never worse than ggml",
)


@hookimpl
def qf_register_strategies(registrar):
    registrar.add_strategy(EXHAUSTIVE)
