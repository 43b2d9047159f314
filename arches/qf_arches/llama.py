"""Llama-family dense models (llama, SmolLM2, Mistral ...)."""

from __future__ import annotations

from qf import Arch, hookimpl

LLAMA = Arch("llama", ("llama",), facts="qf_arches._facts:llama", forward="qf_arches.forward.llama:build",
             description="dense llama-style transformer (70B rule: more bits for attn_v)")


@hookimpl
def qf_register_arches(registrar):
    registrar.add_arch(LLAMA)
