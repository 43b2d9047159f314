"""The fallback architecture: any ``general.architecture`` without a plugin of its own."""

from __future__ import annotations

from qf import Arch, hookimpl

GENERIC = Arch("generic", ("*",), facts="qf_arches._facts:generic",
               description="any architecture: llama.cpp's generic tensor rules")


@hookimpl
def qf_register_arches(registrar):
    registrar.add_arch(GENERIC)
