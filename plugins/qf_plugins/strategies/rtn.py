"""``rtn``: plain round-to-nearest.  One scale from the block's extreme value, no search, imatrix ignored."""

from __future__ import annotations

import numpy as np

from qf import hookimpl
from qf.model import BlockProblem, BlockSolution, Strategy


class RoundToNearest:
    def solve(self, problem: BlockProblem) -> BlockSolution:
        from qf_plugins.strategies import _rtn_kernels as k

        x = np.ascontiguousarray(problem.x, np.float32)
        n = x.shape[0]
        d = np.empty(n, np.float32)
        q = np.empty(x.shape, np.int32)
        if problem.kind == "symmetric":
            k.rtn_symmetric(x, problem.qmin, problem.qmax, d, q)
            return BlockSolution(d, q)
        if problem.kind == "asymmetric":
            m = np.empty(n, np.float32)
            k.rtn_asymmetric(x, problem.qmax, d, m, q)
            return BlockSolution(d, q, m)
        if problem.kind == "table":
            k.rtn_table(x, np.ascontiguousarray(problem.table, np.float32), d, q)
            return BlockSolution(d, q)
        raise ValueError(f"rtn cannot solve {problem.kind!r} problems")


SOLVER = RoundToNearest()

RTN = Strategy(
    "rtn",
    solves=("symmetric", "asymmetric", "table"),
    solver=f"{__name__}:SOLVER",
    description="plain round-to-nearest from the block's extreme value (imatrix ignored)",
)


@hookimpl
def qf_register_strategies(registrar):
    registrar.add_strategy(RTN)
