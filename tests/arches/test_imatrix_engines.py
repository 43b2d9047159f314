"""qf imatrix --engine: which engine serves which architecture, and what the user is told (no llama.cpp needed)."""

from __future__ import annotations

import pytest

from qf.errors import UsageError
from qf_arches.imatrix import engines


@pytest.fixture
def no_llama_cpp(monkeypatch):
    monkeypatch.setattr(engines, "llama_cpp_available", lambda: False)


@pytest.fixture
def with_llama_cpp(monkeypatch):
    monkeypatch.setattr(engines, "llama_cpp_available", lambda: True)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "qwen3moe", "glm4moe", "deepseek2"])
def test_auto_prefers_numpy_where_qf_has_a_pass(arch, with_llama_cpp):
    assert engines.choose_engine("auto", arch)[0] == "numpy"


@pytest.mark.parametrize("arch", ["gemma3", "phi3", "gpt-oss", "granite", "olmo2", ""])
def test_auto_falls_back_to_llama_cpp(arch, with_llama_cpp):
    name, reason = engines.choose_engine("auto", arch)
    assert name == "llama.cpp" and "no numpy forward pass" in reason


def test_auto_without_llama_cpp_names_both_ways_out(no_llama_cpp):
    with pytest.raises(UsageError, match=r"architecture 'gemma3'; qf imatrix supports: .*llama-cpp-python"):
        engines.choose_engine("auto", "gemma3")
    assert engines.choose_engine("auto", "llama")[0] == "numpy"


def test_explicit_engines(no_llama_cpp):
    with pytest.raises(UsageError, match="--engine numpy: no forward pass for architecture 'gemma3'"):
        engines.choose_engine("numpy", "gemma3")
    with pytest.raises(UsageError, match=r"--engine llama.cpp: not available here"):
        engines.choose_engine("llama.cpp", "llama")
    with pytest.raises(UsageError, match="unknown imatrix engine"):
        engines.choose_engine("torch", "llama")


def test_explicit_llama_cpp_for_any_arch(with_llama_cpp):
    assert engines.choose_engine("llama.cpp", "llama") == ("llama.cpp", "as asked")
