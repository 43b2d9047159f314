"""Llama-family dense models (llama, SmolLM2, Mistral ...)."""

from __future__ import annotations

from qf import Arch, hookimpl

LLAMA = Arch("llama", ("llama",), description="dense llama-style transformer")


@hookimpl
def qf_register_arches(registrar):
    registrar.add_arch(LLAMA)
