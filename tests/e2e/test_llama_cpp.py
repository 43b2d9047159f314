"""Real-client checks: byte identity with llama.cpp's own quantizer, and llama.cpp loading qf's files."""

from __future__ import annotations

import hashlib
import json

import pytest

import llama_ref
import qf
from paths import GOLDEN_E2E, need
from qf.gguf_io import GGUFFile

pytestmark = pytest.mark.e2e


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def assert_same_tensors(ours, theirs):
    a, b = GGUFFile.open(ours), GGUFFile.open(theirs)
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    for ta, tb in zip(a.tensors, b.tensors):
        assert (ta.type_id, ta.shape) == (tb.type_id, tb.shape), ta.name
        assert a.tensor_data(ta).tobytes() == b.tensor_data(tb).tobytes(), f"{ta.name} bytes differ"


def generate(llama_cpp, path) -> str:
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False, seed=1)
    out = llm.create_completion("The capital of France is", max_tokens=12, temperature=0.0)
    return out["choices"][0]["text"]


@pytest.mark.parametrize("ftype", ["F16", "Q8_0", "Q4_0"])
def test_requantize_smollm2_like_llama_cpp(smollm2, llama_cpp, tmp_path, ftype):
    ours, theirs = tmp_path / "qf.gguf", tmp_path / "llama.gguf"
    qf.quantize_file(smollm2, ours, ftype, allow_requantize=True, pure=True, threads=2)
    llama_ref.reference_quantize(smollm2, theirs, ftype, allow_requantize=True, pure=True, nthread=2)
    assert_same_tensors(ours, theirs)
    assert sha256(ours) == sha256(theirs)
    text = generate(llama_cpp, ours)
    assert len(text.strip()) > 0


def test_golden_e2e_q8_0_whole_file(smollm2, tmp_path):
    """golden-e2e/smollm2/quant/Q8_0 was made from the dequantized F32 file; requantizing the Q4_1 file gives the
    same bytes (golden-e2e README)."""
    manifest = json.loads((need(GOLDEN_E2E / "smollm2" / "quant" / "Q8_0") / "manifest.json").read_text())
    out = tmp_path / "q8.gguf"
    qf.quantize_file(smollm2, out, "Q8_0", allow_requantize=True, threads=2)
    assert sha256(out) == manifest["output_sha256"]
