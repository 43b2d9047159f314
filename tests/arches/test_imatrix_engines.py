"""qf imatrix --engine: which engine serves which architecture, and what the user is told (no llama.cpp needed)."""

from __future__ import annotations

import pytest

from qf import ImatrixEngine, hookimpl
from qf.errors import PluginError, UsageError
from qf.plugins import registered
from qf_arches.imatrix import engines


@pytest.fixture
def no_llama_cpp(monkeypatch):
    monkeypatch.setattr(engines, "llama_cpp_available", lambda: False)


@pytest.fixture
def with_llama_cpp(monkeypatch):
    monkeypatch.setattr(engines, "llama_cpp_available", lambda: True)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "qwen3moe", "glm4moe", "deepseek2"])
def test_auto_prefers_numpy_where_qf_has_a_pass(arch, with_llama_cpp):
    assert engines.choose_engine("auto", arch)[0].name == "numpy"


@pytest.mark.parametrize("arch", ["gemma3", "phi3", "gpt-oss", "granite", "olmo2", ""])
def test_auto_falls_back_to_llama_cpp(arch, with_llama_cpp):
    engine, reason = engines.choose_engine("auto", arch)
    assert engine.name == "llama.cpp" and "no numpy forward pass" in reason


def test_auto_without_llama_cpp_names_both_ways_out(no_llama_cpp):
    with pytest.raises(UsageError, match=r"architecture 'gemma3'; qf imatrix supports: .*llama-cpp-python"):
        engines.choose_engine("auto", "gemma3")
    assert engines.choose_engine("auto", "llama")[0].name == "numpy"


def test_explicit_engines(no_llama_cpp):
    with pytest.raises(UsageError, match="--engine numpy: no forward pass for architecture 'gemma3'"):
        engines.choose_engine("numpy", "gemma3")
    with pytest.raises(UsageError, match=r"--engine llama.cpp: not available here"):
        engines.choose_engine("llama.cpp", "llama")
    with pytest.raises(UsageError, match="unknown imatrix engine"):
        engines.choose_engine("torch", "llama")


def test_explicit_llama_cpp_for_any_arch(with_llama_cpp):
    engine, reason = engines.choose_engine("llama.cpp", "llama")
    assert (engine.name, reason) == ("llama.cpp", "as asked")


# -- engines are a plugin kind: another distribution adds one through the same hook -------------------------------
class ToyEngines:
    """A plugin adding an engine that runs MTP heads for gemma3 only (think: a GPU pass)."""

    calls: list = []

    @staticmethod
    def handles(arch):
        return arch == "gemma3"

    @staticmethod
    def available():
        return None

    @staticmethod
    def run(run):
        ToyEngines.calls.append(run)
        return "toy result"

    @hookimpl
    def qf_register_imatrix_engines(self, registrar):
        here = f"{__name__}:ToyEngines"
        registrar.add_imatrix_engine(ImatrixEngine("toy", runner=f"{here}.run", available=f"{here}.available",
                                                   handles=f"{here}.handles", auto_rank=5, runs_mtp=True))


def test_a_registered_engine_is_chosen_and_run(with_llama_cpp):
    with registered(("toy-engines", ToyEngines())) as reg:
        assert set(reg.imatrix_engines) == {"numpy", "llama.cpp", "toy"}
        assert reg.imatrix_engines["toy"].plugin == "toy-engines"
        assert engines.choose_engine("auto", "gemma3")[0].name == "llama.cpp"  # rank 1 before rank 5
        toy, reason = engines.choose_engine("auto", "gemma3", mtp=True)  # it runs MTP heads, llama.cpp does not
        assert toy.name == "toy" and "no numpy forward pass" in reason
        assert engines.choose_engine("auto", "llama", mtp=True)[0].name == "numpy"
        llama, reason = engines.choose_engine("auto", "phi3", mtp=True)
        assert llama.name == "llama.cpp" and "does not run MTP" in reason
        assert engines.choose_engine("toy", "gemma3")[0].run("RUN") == "toy result" and ToyEngines.calls == ["RUN"]
        with pytest.raises(UsageError, match="--engine toy: no forward pass for architecture 'llama'; use --engine"
                                             " numpy or auto"):
            engines.choose_engine("toy", "llama")
        assert "toy" in str(pytest.raises(UsageError, engines.choose_engine, "torch", "llama").value)


def test_an_engine_name_registered_twice_is_a_plugin_error():
    class Twice:
        @hookimpl
        def qf_register_imatrix_engines(self, registrar):
            registrar.add_imatrix_engine(engines.NUMPY)

    with pytest.raises(PluginError, match="imatrix engine 'numpy' is registered twice"):
        with registered(("twice", Twice())):
            pass
