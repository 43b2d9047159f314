"""Every hook qf calls, in one place.

A plugin is a module (or object) listed under the ``qf`` entry-point group that implements some of these hooks with
``@qf.hookimpl``.  Each registration hook receives a *registrar*; calling ``registrar.add_...`` twice with the same
name, from this or another plugin, is an error that names both plugins.  qf's own types, strategies and
architectures are registered exactly this way.  The hooks run in the order below (problem kinds and targets first,
so that the types and strategies naming them can be checked once all are in).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from qf.plugins import Registrar

hookspec = pluggy.HookspecMarker("qf")
hookimpl = pluggy.HookimplMarker("qf")


@hookspec
def qf_register_problem_kinds(registrar: Registrar) -> None:
    """Register search problem kinds types pose and strategies solve:
    ``registrar.add_problem_kind(ProblemKind("lattice", "x ≈ d·v, v from a fixed set of vectors"))``."""


@hookspec
def qf_register_targets(registrar: Registrar) -> None:
    """Register runtimes files are written for: ``registrar.add_target(Target("ik", base="ggml"))``."""


@hookspec
def qf_register_quant_types(registrar: Registrar) -> None:
    """Register quant types: ``registrar.add_quant_type(QuantType("MY4", 200, 32, 18, "pkg.mod:CODEC"))``."""


@hookspec
def qf_register_strategies(registrar: Registrar) -> None:
    """Register search strategies: ``registrar.add_strategy(Strategy("mine", solvers={"symmetric": "pkg:solve"}))``."""


@hookspec
def qf_register_arches(registrar: Registrar) -> None:
    """Register architectures: ``registrar.add_arch(Arch("myarch", ("myarch",), facts="pkg.mod:facts"))``."""


@hookspec
def qf_register_presets(registrar: Registrar) -> None:
    """Register ftype presets: ``registrar.add_preset(Preset("MY4_M", 200, "MY4", mix="llama.cpp"))``."""


@hookspec
def qf_register_executors(registrar: Registrar) -> None:
    """Register where work units run: ``registrar.add_executor(ExecutorSpec("mine", runner="pkg.mod:MyExecutor"))``."""


@hookspec
def qf_register_imatrix_engines(registrar: Registrar) -> None:
    """Register forward passes for ``qf imatrix --engine``:
    ``registrar.add_imatrix_engine(ImatrixEngine("mine", runner=..., available=..., handles=...))``."""


@hookspec
def qf_register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``qf`` command line: ``cli.add_command(my_command)``."""
