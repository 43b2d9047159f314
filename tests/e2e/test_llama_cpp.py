"""Real-client checks: byte identity with llama.cpp's own quantizer, and llama.cpp loading qf's files."""

from __future__ import annotations

import hashlib
import json
import math

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
    """llama.cpp loads the file and generates: at least one token, every token's log-probability finite."""
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False, seed=1, logits_all=True)
    out = llm.create_completion("The capital of France is", max_tokens=12, temperature=0.0, logprobs=1)
    choice = out["choices"][0]
    assert out["usage"]["completion_tokens"] >= 1, out
    logprobs = choice["logprobs"]["token_logprobs"]
    assert logprobs and all(math.isfinite(lp) for lp in logprobs), logprobs
    return choice["text"]


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


IMATRIX = GOLDEN_E2E / "smollm2" / "imatrix" / "imatrix.gguf"
GGML = {"Q8_0": 8, "Q6_K": 14, "Q4_K": 12, "Q2_K": 10}


@pytest.mark.parametrize("ftype", ["Q4_K", "Q6_K", "IQ4_XS", "IQ4_NL"])
@pytest.mark.parametrize("with_imatrix", [False, True], ids=["plain", "imatrix"])
def test_pure_k_and_iq4_like_llama_cpp(smollm2, llama_cpp, tmp_path, ftype, with_imatrix, monkeypatch):
    """Issue 3: pure K/IQ4 files equal llama_model_quantize's, with and without the golden imatrix."""
    monkeypatch.chdir(need(GOLDEN_E2E / "smollm2"))
    imatrix = "imatrix/imatrix.gguf" if with_imatrix else None
    ours, theirs = tmp_path / "qf.gguf", tmp_path / "llama.gguf"
    qf.quantize_file(smollm2, ours, ftype, allow_requantize=True, pure=True, imatrix=imatrix, threads=2)
    llama_ref.reference_quantize(smollm2, theirs, ftype.replace("Q4_K", "Q4_K_M"), allow_requantize=True,
                                 pure=True, nthread=2, imatrix_path=imatrix, imatrix_arg=imatrix)
    assert_same_tensors(ours, theirs)
    assert sha256(ours) == sha256(theirs)
    assert generate(llama_cpp, ours).strip()


@pytest.mark.parametrize("ftype", ["IQ2_XXS", "IQ3_S", "IQ1_M"])
def test_pure_grid_types_like_llama_cpp(smollm2, llama_cpp, tmp_path, ftype, monkeypatch):
    """Issue 4: pure grid types with the golden imatrix, token_embd and output at Q8_0."""
    monkeypatch.chdir(need(GOLDEN_E2E / "smollm2"))
    imatrix = "imatrix/imatrix.gguf"
    ours, theirs = tmp_path / "qf.gguf", tmp_path / "llama.gguf"
    qf.quantize_file(smollm2, ours, ftype, allow_requantize=True, pure=True, imatrix=imatrix, threads=2,
                     token_embedding_type="Q8_0", output_tensor_type="Q8_0")
    llama_ref.reference_quantize(smollm2, theirs, ftype, allow_requantize=True, pure=True, nthread=2,
                                 imatrix_path=imatrix, imatrix_arg=imatrix, token_embedding_type=GGML["Q8_0"],
                                 output_tensor_type=GGML["Q8_0"])
    assert_same_tensors(ours, theirs)
    assert sha256(ours) == sha256(theirs)
    generate(llama_cpp, ours)  # loads and runs, finite log-probabilities (1.75-bit text need not be sensible)


SPREAD = [
    ("Q4_K_M", {}, {}),
    ("Q3_K_M", {"imatrix": True}, {}),
    ("Q5_K_S", {"tensor_types": [("attn_v", "Q8_0"), (r"blk\.1[0-9]\.ffn_down", "Q2_K")]},
     {"tensor_types": [("attn_v", 8), (r"blk\.1[0-9]\.ffn_down", 10)]}),
    ("Q4_K_M", {"prune_layers": (3, 7)}, {"prune_layers": (3, 7)}),
    ("IQ2_M", {"imatrix": True}, {}),
    ("Q2_K_S", {"imatrix": True, "leave_output_tensor": True}, {"leave_output_tensor": True}),
    ("MXFP4_MOE", {}, {}),
    ("TQ1_0", {}, {}),
]


@pytest.mark.parametrize("ftype,ours_opts,ref_opts", SPREAD, ids=[f"{s[0]}-{i}" for i, s in enumerate(SPREAD)])
def test_spread_of_ftypes_and_options_like_llama_cpp(smollm2, tmp_path, ftype, ours_opts, ref_opts, monkeypatch):
    """Issue 5: mixes and options give the bytes llama_model_quantize writes for the same input."""
    monkeypatch.chdir(need(GOLDEN_E2E / "smollm2"))
    ours_opts, ref_opts = dict(ours_opts), dict(ref_opts)
    if ours_opts.pop("imatrix", False):
        ours_opts["imatrix"] = ref_opts["imatrix_path"] = ref_opts["imatrix_arg"] = "imatrix/imatrix.gguf"
    ours, theirs = tmp_path / "qf.gguf", tmp_path / "llama.gguf"
    qf.quantize_file(smollm2, ours, ftype, allow_requantize=True, threads=2, **ours_opts)
    llama_ref.reference_quantize(smollm2, theirs, ftype, allow_requantize=True, nthread=2, **ref_opts)
    assert_same_tensors(ours, theirs)
    assert sha256(ours) == sha256(theirs)
