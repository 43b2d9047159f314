"""Issue 6: files written with the `gradient` and `exhaustive` strategies are valid GGUF that llama.cpp runs."""

from __future__ import annotations

import pytest

import qf
from paths import GOLDEN_E2E, need
from qf.gguf_io import GGUFFile

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("strategy, ftype, opts", [
    ("gradient", "Q4_K_M", {}),
    ("exhaustive", "Q4_0", {"pure": True, "token_embedding_type": "Q8_0", "output_tensor_type": "Q8_0"}),
    ("gradient", "IQ4_NL", {"pure": True}),
])
def test_search_strategy_file_runs_in_llama_cpp(smollm2, llama_cpp, tmp_path, strategy, ftype, opts):
    imatrix = str(need(GOLDEN_E2E / "smollm2" / "imatrix" / "imatrix.gguf"))
    ours, base = tmp_path / f"{strategy}.gguf", tmp_path / "ggml.gguf"
    qf.quantize_file(smollm2, ours, ftype, allow_requantize=True, imatrix=imatrix, strategy=strategy, threads=2,
                     **opts)
    qf.quantize_file(smollm2, base, ftype, allow_requantize=True, imatrix=imatrix, threads=2, **opts)
    a, b = GGUFFile.open(ours), GGUFFile.open(base)
    assert [(t.name, t.type_id, t.shape) for t in a.tensors] == [(t.name, t.type_id, t.shape) for t in b.tensors]
    assert any(a.tensor_data(ta).tobytes() != b.tensor_data(tb).tobytes()
               for ta, tb in zip(a.tensors, b.tensors)), "the strategy changed nothing"
    llm = llama_cpp.Llama(model_path=str(ours), n_ctx=256, n_threads=2, verbose=False, seed=1)
    text = llm.create_completion("The capital of France is", max_tokens=12, temperature=0.0)["choices"][0]["text"]
    assert text.strip()
