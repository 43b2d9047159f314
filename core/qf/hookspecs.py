"""Every hook qf calls, in one place.

A plugin is a module (or object) listed under the ``qf`` entry-point group that implements some of these hooks with
``@qf.hookimpl``.  Each registration hook receives a *registrar*; calling ``registrar.add_...`` twice with the same
name, from this or another plugin, is an error that names both plugins.  qf's own types, strategies and
architectures are registered exactly this way.
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
def qf_register_quant_types(registrar: Registrar) -> None:
    """Register quant types with ``registrar.add_quant_type(QuantType(...))``."""


@hookspec
def qf_register_strategies(registrar: Registrar) -> None:
    """Register search strategies with ``registrar.add_strategy(Strategy(...))``."""


@hookspec
def qf_register_arches(registrar: Registrar) -> None:
    """Register architectures with ``registrar.add_arch(Arch(...))``."""


@hookspec
def qf_register_presets(registrar: Registrar) -> None:
    """Register ftype presets (Q4_K_M ...) with ``registrar.add_preset(Preset(...))``."""


@hookspec
def qf_register_commands(cli: click.Group) -> None:
    """Add sub-commands to the ``qf`` command line (``@cli.command()``)."""
