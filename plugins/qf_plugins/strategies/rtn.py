"""``rtn``: plain round-to-nearest.  One scale from the block's extreme value, no search, imatrix ignored."""

from __future__ import annotations

import numpy as np

from qf import BlockProblem, BlockSolution, Strategy, hookimpl


def _kernels():
    from qf_plugins.strategies import _rtn_kernels

    return _rtn_kernels


def symmetric(problem: BlockProblem) -> BlockSolution:
    x = np.ascontiguousarray(problem.x, np.float32)
    d, q = np.empty(x.shape[0], np.float32), np.empty(x.shape, np.int32)
    _kernels().rtn_symmetric(x, problem.qmin, problem.qmax, d, q)
    return BlockSolution(d, q)


def asymmetric(problem: BlockProblem) -> BlockSolution:
    x = np.ascontiguousarray(problem.x, np.float32)
    d, m, q = np.empty(x.shape[0], np.float32), np.empty(x.shape[0], np.float32), np.empty(x.shape, np.int32)
    _kernels().rtn_asymmetric(x, problem.qmax, d, m, q)
    return BlockSolution(d, q, m)


def table(problem: BlockProblem) -> BlockSolution:
    x = np.ascontiguousarray(problem.x, np.float32)
    d, q = np.empty(x.shape[0], np.float32), np.empty(x.shape, np.int32)
    _kernels().rtn_table(x, np.ascontiguousarray(problem.table, np.float32), d, q)
    return BlockSolution(d, q)


RTN = Strategy(
    "rtn",
    solvers={kind: f"{__name__}:{kind}" for kind in ("symmetric", "asymmetric", "table")},
    description="plain round-to-nearest from the block's extreme value (imatrix ignored)",
)


@hookimpl
def qf_register_strategies(registrar):
    registrar.add_strategy(RTN)
