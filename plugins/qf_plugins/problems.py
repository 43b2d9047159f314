"""The search problem kinds qf's types pose and its strategies solve (see CONTRIBUTING.md)."""

from __future__ import annotations

from qf import ProblemKind, hookimpl

KINDS = (
    ProblemKind("symmetric", "x ≈ d·q, q an integer in [qmin, qmax]"),
    ProblemKind("asymmetric", "x ≈ d·q + m, q an integer in [0, qmax], m <= offset_max"),
    ProblemKind("table", "x ≈ d·T[q], T a fixed ascending non-linear table"),
)


@hookimpl
def qf_register_problem_kinds(registrar):
    for kind in KINDS:
        registrar.add_problem_kind(kind)
