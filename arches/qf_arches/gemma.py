"""Gemma 3."""

from __future__ import annotations

from qf import Arch, hookimpl

GEMMA3 = Arch("gemma3", ("gemma3",), facts="qf_arches._facts:generic", description="Gemma 3 (tied embeddings)")


@hookimpl
def qf_register_arches(registrar):
    registrar.add_arch(GEMMA3)
