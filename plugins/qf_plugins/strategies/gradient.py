"""``gradient``: a scale scan, then single-quant moves along the error gradient while the error falls
(ik_llama.cpp PR #295 for x ≈ d·q and x ≈ d·T[q], PR #302 for x ≈ d·q + m).  See _gradient_kernels."""

from __future__ import annotations

import numpy as np

from qf import hookimpl
from qf.model import BlockProblem, BlockSolution, Strategy

#: scale-scan width: candidates per end of the quant range are 2·NSTEP + 1 (asymmetric: NSTEP + 1)
NSTEP = 6
ASYM_STEPS = 25


class Gradient:
    def solve(self, problem: BlockProblem) -> BlockSolution:
        from qf_plugins.strategies import _gradient_kernels as k

        x = np.ascontiguousarray(problem.x, np.float32)
        w = np.ascontiguousarray(problem.w, np.float32)
        n = x.shape[0]
        d = np.empty(n, np.float32)
        q = np.empty(x.shape, np.int32)
        if problem.kind == "symmetric":
            k.symmetric(x, w, problem.qmin, problem.qmax, NSTEP, d, q)
            return BlockSolution(d, q)
        if problem.kind == "asymmetric":
            m = np.empty(n, np.float32)
            k.asymmetric(x, w, problem.qmax, float(problem.offset_max), ASYM_STEPS, d, m, q)
            return BlockSolution(d, q, m)
        if problem.kind == "table":
            k.table(x, w, np.ascontiguousarray(problem.table, np.float32), NSTEP, d, q)
            return BlockSolution(d, q)
        raise ValueError(f"gradient cannot solve {problem.kind!r} problems")


SOLVER = Gradient()

GRADIENT = Strategy(
    "gradient",
    solves=("symmetric", "asymmetric", "table"),
    solver=f"{__name__}:SOLVER",
    keeps_native=True,
    description="best of a scale scan, then quant moves along the error gradient (ik_llama.cpp PR 295/302); "
                "per block never worse than ggml",
)


@hookimpl
def qf_register_strategies(registrar):
    registrar.add_strategy(GRADIENT)
