"""``exhaustive``: the exact least-squares optimum per block, by walking every scale breakpoint in order
(compilade's cumulative search, llama.cpp PR 12557).  See _exhaustive_kernels for the method."""

from __future__ import annotations

import numpy as np

from qf import hookimpl
from qf.model import BlockProblem, BlockSolution, Strategy

#: widest integer range walked exhaustively (6 bits): the walk's cost grows with the range while its gain over the
#: gradient search vanishes, so 8-bit problems (Q8_0) are handed to ``gradient``
WIDEST = 64


class Exhaustive:
    def solve(self, problem: BlockProblem) -> BlockSolution:
        from qf_plugins.strategies import _exhaustive_kernels as k

        x = np.ascontiguousarray(problem.x, np.float32)
        w = np.ascontiguousarray(problem.w, np.float32)
        n = x.shape[0]
        d = np.empty(n, np.float32)
        q = np.empty(x.shape, np.int32)
        if problem.kind == "symmetric" and problem.qmax - problem.qmin > WIDEST:
            from qf_plugins.strategies.gradient import SOLVER as gradient

            return gradient.solve(problem)
        if problem.kind == "symmetric":
            k.symmetric(x, w, problem.qmin, problem.qmax, d, q)
            return BlockSolution(d, q)
        if problem.kind == "asymmetric":
            m = np.empty(n, np.float32)
            k.asymmetric(x, w, problem.qmax, float(problem.offset_max), d, m, q)
            return BlockSolution(d, q, m)
        if problem.kind == "table":
            k.table(x, w, np.ascontiguousarray(problem.table, np.float32), d, q)
            return BlockSolution(d, q)
        raise ValueError(f"exhaustive cannot solve {problem.kind!r} problems")


SOLVER = Exhaustive()

EXHAUSTIVE = Strategy(
    "exhaustive",
    solves=("symmetric", "asymmetric", "table"),
    solver=f"{__name__}:SOLVER",
    keeps_native=True,
    description="exact optimum per block over every scale breakpoint (compilade's cumulative search); "
                "8-bit ranges (Q8_0) use gradient; per block never worse than ggml",
)


@hookimpl
def qf_register_strategies(registrar):
    registrar.add_strategy(EXHAUSTIVE)
