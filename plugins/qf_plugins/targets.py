"""The runtime qf writes for by default: llama.cpp (mainline ggml), whose type ids and bytes qf's types reproduce."""

from __future__ import annotations

from qf import Target, hookimpl

GGML = Target("ggml", description="llama.cpp (ggml-org), commit 0c1e570")


@hookimpl
def qf_register_targets(registrar):
    registrar.add_target(GGML)
