"""qf: quantize LLM weights into GGUF files that llama.cpp runs.

Public API::

    qf.quantize_rows(type_name, x, imatrix=None, strategy=None) -> uint8 (rows, row_bytes)  (None: ggml's own search)
    qf.dequantize_rows(type_name, data, n_per_row) -> float32 (rows, n_per_row)
    qf.quantize_file(input, output, ftype, ...) -> qf.plan.Plan

Plugins implement hooks with ``@qf.hookimpl`` (see qf.hookspecs) and register ``qf.QuantType``, ``qf.Strategy``,
``qf.Arch``, ``qf.Preset``, ``qf.ProblemKind`` and ``qf.Target`` values.
"""

from __future__ import annotations

from typing import Any

from qf.hookspecs import hookimpl, hookspec
from qf.values import (
    Arch,
    ArchFacts,
    BlockProblem,
    BlockSolution,
    ExecutorSpec,
    ImatrixEngine,
    Preset,
    ProblemKind,
    QuantType,
    Strategy,
    Target,
)

__version__ = "0.1.0"

__all__ = [
    "Arch",
    "ArchFacts",
    "BlockProblem",
    "BlockSolution",
    "ExecutorSpec",
    "ImatrixEngine",
    "Preset",
    "ProblemKind",
    "QuantType",
    "Strategy",
    "Target",
    "dequantize_rows",
    "get_registry",
    "hookimpl",
    "hookspec",
    "quantize_file",
    "quantize_rows",
]

_LAZY = {
    "quantize_rows": "qf.api",
    "dequantize_rows": "qf.api",
    "quantize_file": "qf.app.pipeline",
    "get_registry": "qf.plugins",
}


def __getattr__(name: str) -> Any:  # keep `import qf` cheap: numpy-heavy modules load on first use
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qf' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
