"""``gradient``: a scale scan, then single-quant moves along the error gradient while the error falls
(ik_llama.cpp PR #295 for x ≈ d·q and x ≈ d·T[q], PR #302 for x ≈ d·q + m).  See _gradient_kernels."""

from __future__ import annotations

import numpy as np

from qf import BlockProblem, BlockSolution, Strategy, hookimpl

#: scale-scan width: candidates per end of the quant range are 2·NSTEP + 1 (asymmetric: NSTEP + 1)
NSTEP = 6
ASYM_STEPS = 25


def _kernels():
    from qf_plugins.strategies import _gradient_kernels

    return _gradient_kernels


def _arrays(problem: BlockProblem):
    x = np.ascontiguousarray(problem.x, np.float32)
    w = np.ascontiguousarray(problem.w, np.float32)
    return x, w, np.empty(x.shape[0], np.float32), np.empty(x.shape, np.int32)


def symmetric(problem: BlockProblem) -> BlockSolution:
    x, w, d, q = _arrays(problem)
    _kernels().symmetric(x, w, problem.qmin, problem.qmax, NSTEP, d, q)
    return BlockSolution(d, q)


def asymmetric(problem: BlockProblem) -> BlockSolution:
    x, w, d, q = _arrays(problem)
    m = np.empty(x.shape[0], np.float32)
    _kernels().asymmetric(x, w, problem.qmax, float(problem.offset_max), ASYM_STEPS, d, m, q)
    return BlockSolution(d, q, m)


def table(problem: BlockProblem) -> BlockSolution:
    x, w, d, q = _arrays(problem)
    _kernels().table(x, w, np.ascontiguousarray(problem.table, np.float32), NSTEP, d, q)
    return BlockSolution(d, q)


GRADIENT = Strategy(
    "gradient",
    solvers={kind: f"{__name__}:{kind}" for kind in ("symmetric", "asymmetric", "table")},
    keeps_native=True,
    description="best of a scale scan, then quant moves along the error gradient (ik_llama.cpp PR 295/302); "
                "per block never worse than ggml",
)


@hookimpl
def qf_register_strategies(registrar):
    registrar.add_strategy(GRADIENT)
