"""``ggml``: each type's own llama.cpp search, byte for byte (the default)."""

from __future__ import annotations

from qf import Strategy, hookimpl

GGML = Strategy(
    "ggml",
    native=True,
    description="llama.cpp's own search for each type: byte-identical to llama-quantize",
)


@hookimpl
def qf_register_strategies(registrar):
    registrar.add_strategy(GGML)
