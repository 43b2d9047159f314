"""Qwen families: qwen2 (dense), qwen3 (dense, q/k norms), qwen3moe (experts)."""

from __future__ import annotations

from qf import Arch, hookimpl

_FORWARD = "qf_arches.forward.qwen:build"

QWEN2 = Arch("qwen2", ("qwen2",), facts="qf_arches._facts:eighty_layers_is_70b", forward=_FORWARD,
             description="Qwen2 dense")
QWEN3 = Arch("qwen3", ("qwen3",), facts="qf_arches._facts:generic", forward=_FORWARD, description="Qwen3 dense")
QWEN3MOE = Arch("qwen3moe", ("qwen3moe",), facts="qf_arches._facts:generic", forward=_FORWARD,
                description="Qwen3 mixture of experts")


@hookimpl
def qf_register_arches(registrar):
    for arch in (QWEN2, QWEN3, QWEN3MOE):
        registrar.add_arch(arch)
