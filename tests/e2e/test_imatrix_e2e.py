"""qf imatrix against llama.cpp itself (llama-cpp-python 0.3.36): tokens, and the collected sums and counts.

benchmarks/llama_imatrix_ref.py runs llama-imatrix's loop in-process with an eval callback, so qf is compared with
llama.cpp on this machine (exact counts, except that qwen3moe's near-tie tokens may route either way: see
tests/imatrix_compare.py), and SmolLM2 with the golden file
(slow: 40 chunks of 512).
"""

from __future__ import annotations

import numpy as np
import pytest
from imatrix_compare import SUM_RTOL, compare_imatrix

import llama_imatrix_ref
from paths import DATA, GOLDEN_E2E, need
from qf.gguf_io.source import TensorSource
from qf.imatrix import Imatrix
from qf_arches.imatrix.collect import CollectOptions, ModelWeights, collect
from qf_arches.imatrix.tokenize import tokenize_text

ARCHES = ("llama", "glm4moe", "deepseek2", "qwen3moe")


def text():
    return need(DATA / "calib_austen_emma.txt").read_bytes()


@pytest.mark.parametrize("model", ["smollm2", "synthetic-llama"])
def test_tokens_match_llama_cpp(model, llama_cpp, smollm2):
    path = str(smollm2) if model == "smollm2" else str(need(GOLDEN_E2E / "synthetic" / "llama" /
                                                            "synthetic-llama-F32.gguf"))
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    ref = np.array(llm.tokenize(text(), add_bos=True, special=False), np.int32)
    ours = tokenize_text(ModelWeights(TensorSource.open(path)).metadata, text().decode("utf-8"))
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("arch", ARCHES)
def test_synthetic_agrees_with_llama_cpp(arch, llama_cpp):
    path = need(GOLDEN_E2E / "synthetic" / arch / f"synthetic-{arch}-F32.gguf")
    model = ModelWeights(TensorSource.open(path))
    tokens = tokenize_text(model.metadata, text().decode("utf-8"))
    ref = llama_imatrix_ref.reference_imatrix(str(path), tokens, 128, 4)
    ours = collect(model, tokens, CollectOptions(n_ctx=128, n_chunks=4)).stats.entries
    # qwen3moe's near-tie tokens may route either way in this machine's llama.cpp build (tests/imatrix_compare.py)
    compare_imatrix(arch, {n: (e.sums, e.counts) for n, e in ours.items()},
                    {n: (ref["sums"][n], ref["counts"][n]) for n in ref["sums"]})


@pytest.mark.slow
def test_smollm2_agrees_with_golden_llama_imatrix(smollm2):
    golden = Imatrix.load(need(GOLDEN_E2E / "smollm2" / "imatrix" / "imatrix.gguf"))
    model = ModelWeights(TensorSource.open(smollm2))
    tokens = tokenize_text(model.metadata, text().decode("utf-8"))
    result = collect(model, tokens, CollectOptions(n_ctx=512, n_chunks=40))
    assert result.ppl.value == pytest.approx(27.8536, rel=2e-5)  # imatrix_gguf.log: PPL = 27.8536 +/- 0.80175
    ours, ref = result.stats.to_imatrix().sums_and_counts(), golden.sums_and_counts()
    assert sorted(ours) == sorted(ref) and result.stats.chunk_count == 40
    for name, (sums, counts) in ref.items():
        np.testing.assert_array_equal(ours[name][1], counts, err_msg=name)
        rel = np.abs(ours[name][0].astype(np.float64) - sums) / np.abs(sums)
        assert rel.max() <= SUM_RTOL, f"{name}: {rel.max():.3g}"
