"""Split outputs (``--split-max-size``, ``--split-max-tensors``): shard for shard the bytes llama.cpp's
``llama-gguf-split --split`` makes of the unsplit output (with the tool when it is found: $LLAMA_GGUF_SPLIT, PATH, or
the reference build next to the shared data), the cut rule checked against gguf-split's golden run on SmolLM2, and
the set loaded by llama.cpp (e2e)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

import qf
from model_factory import llama_tensors, write_model
from paths import GOLDEN_E2E, llama_tool, missing
from qf.errors import UsageError
from qf.gguf_io import GGUFFile, TensorSource

CASES = [
    ("--split-max-tensors", "7", {"split_max_tensors": 7}),
    ("--split-max-tensors", "1", {"split_max_tensors": 1}),
    ("--split-max-tensors", "500", {"split_max_tensors": 500}),  # a set of one file: -00001-of-00001
    ("--split-max-size", "1M", {"split_max_size": "1M"}),
]


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def gguf_split_tool() -> str:
    tool = llama_tool("llama-gguf-split")
    if tool is None:
        missing("llama_tools", "llama-gguf-split not found (set LLAMA_GGUF_SPLIT; tox -e e2e builds it with"
                " tests/e2e/build_llama_tools.sh)")
    return tool


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """Big enough that 1M cuts it into several files (3.3 MB of BF16 in, ~1.5 MB out)."""
    shapes = llama_tensors(n_layer=3, n_embd=256, n_ff=512, n_vocab=512, n_kv=128)
    return write_model(tmp_path_factory.mktemp("split") / "in.gguf", dtype="BF16", seed=2, shapes=shapes)


def shards(folder: Path, prefix: str) -> list[Path]:
    return sorted(folder.glob(f"{prefix}-*-of-*.gguf"))


@pytest.mark.parametrize("flag,value,options", CASES, ids=[f"{c[0][2:]}={c[1]}" for c in CASES])
def test_like_llama_gguf_split(model, tmp_path, flag, value, options):
    tool = gguf_split_tool()
    whole = tmp_path / "whole.gguf"
    qf.quantize_file(model, whole, "Q4_K_M", threads=2)
    (tmp_path / "ref").mkdir()
    subprocess.run([tool, "--split", flag, value, str(whole), str(tmp_path / "ref" / "m")], check=True,
                   capture_output=True)
    (tmp_path / "qf").mkdir()
    qf.quantize_file(model, tmp_path / "qf" / "m.gguf", "Q4_K_M", threads=2, **options)
    ref, ours = shards(tmp_path / "ref", "m"), shards(tmp_path / "qf", "m")
    assert [p.name for p in ours] == [p.name for p in ref]
    for a, b in zip(ours, ref):
        assert sha256(a) == sha256(b), a.name


def test_split_set_reads_back(model, tmp_path):
    """Without the tool: the set holds the unsplit file's tensors, metadata in the first file, gguf-split's keys."""
    qf.quantize_file(model, tmp_path / "whole.gguf", "Q4_K_M", threads=2)
    plan = qf.quantize_file(model, tmp_path / "m.gguf", "Q4_K_M", threads=2, split_max_size="1M")
    paths = shards(tmp_path, "m")
    assert len(paths) == len(plan.files) > 1
    whole = GGUFFile.open(tmp_path / "whole.gguf")
    n = len(whole.tensors)
    for i, p in enumerate(paths):
        f = GGUFFile.open(p)
        keys = [kv.key for kv in f.kvs]
        assert keys[-3:] == ["split.no", "split.tensors.count", "split.count"]
        assert keys[:-3] == ([kv.key for kv in whole.kvs] if i == 0 else [])
        values = {kv.key: kv.value for kv in f.kvs}
        assert (values["split.no"], values["split.count"], values["split.tensors.count"]) == (i, len(paths), n)
        data = sum(-(-t.n_bytes // 32) * 32 for t in f.tensors)
        assert data <= 1_000_000 or len(f.tensors) == 1
    source = TensorSource.open(paths[0])
    assert [t.name for t in source.tensors] == [t.name for t in whole.tensors]
    for t in whole.tensors:
        assert source.tensor_data(source.tensor(t.name)).tobytes() == whole.tensor_data(t).tobytes()


def test_cut_rule_matches_golden_gguf_split():
    """gguf-split's golden run on SmolLM2 F32 (--split-max-tensors 100) and size cuts recomputed from its tensor
    sizes: the planner's rule puts the same tensors in the same files."""
    import attrs

    from qf.options import QuantizeOptions
    from qf.plan import PlanEntry, gguf_split_layout

    split = GOLDEN_E2E / "smollm2" / "split-input" / "manifest.json"
    if not split.exists():
        pytest.skip(f"shared reference data not found: {split}")
    manifest = json.loads(split.read_text())
    source = json.loads((GOLDEN_E2E / "smollm2" / "input_manifest.json").read_text())["files"][0]
    names = [t["name"] for t in source["tensors"]]
    fake = [attrs.evolve(_entry(PlanEntry), index=i, name=t["name"], n_bytes_out=t["n_bytes"])
            for i, t in enumerate(source["tensors"])]
    entries, files = gguf_split_layout(fake, [], QuantizeOptions(split_max_tensors=100))
    assert [[e.name for e in f.entries] for f in files] == [[t["name"] for t in fm["tensors"]]
                                                           for fm in manifest["files"]]
    assert [e.name for e in entries] == names


def _entry(cls):
    import attrs

    return cls(**{a.name: None for a in attrs.fields(cls) if a.default is attrs.NOTHING})


def test_options_checked(model, tmp_path):
    for options, message in [({"split_max_size": "10K"}, "units are M"), ({"split_max_size": "0M"}, "positive"),
                             ({"split_max_size": "1M", "split_max_tensors": 3}, "not both"),
                             ({"split_max_tensors": 0}, "positive"),
                             ({"split_max_tensors": 3, "keep_split": True}, "--keep-split")]:
        with pytest.raises(UsageError, match=message):
            qf.quantize_file(model, tmp_path / "m.gguf", "Q4_K_M", **options)
    assert list(tmp_path.iterdir()) == []


def test_first_tensor_too_big(tmp_path):
    """gguf-split refuses a first file without tensors (the first tensor alone above the size); so does qf."""
    model = write_model(tmp_path / "in.gguf", shapes={"token_embd.weight": (1024, 1024)})
    with pytest.raises(UsageError, match="no tensors"):
        qf.quantize_file(model, tmp_path / "m.gguf", "F32", split_max_size="1M")


def test_dask_split(model, tmp_path):
    """The dask executor writes the same split set."""
    pytest.importorskip("distributed")
    qf.quantize_file(model, tmp_path / "t.gguf", "Q4_K_M", threads=2, split_max_tensors=5)
    qf.quantize_file(model, tmp_path / "d.gguf", "Q4_K_M", executor="dask", split_max_tensors=5,
                     executor_options=["workers=2"], threads=2)
    ts, ds = shards(tmp_path, "t"), shards(tmp_path, "d")
    assert len(ts) == len(ds) > 1
    for a, b in zip(ts, ds):
        assert sha256(a) == sha256(b)


@pytest.mark.e2e
def test_llama_cpp_loads_split_smollm2(tmp_path):
    """llama.cpp loads the set from its first file and generates the same text as from the unsplit file."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python==0.3.36 is not installed (tox -e e2e)")
    from llama_ref import need_smollm2

    need_smollm2()
    qf.quantize_file("@smollm2", tmp_path / "whole.gguf", "Q8_0", allow_requantize=True, threads=2)
    qf.quantize_file("@smollm2", tmp_path / "m.gguf", "Q8_0", allow_requantize=True, threads=2,
                     split_max_size="60M")
    paths = shards(tmp_path, "m")
    assert len(paths) >= 2

    def generate(path) -> str:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, n_threads=2, verbose=False, seed=1)
        out = llm.create_completion("The capital of France is", max_tokens=12, temperature=0.0)
        return out["choices"][0]["text"]

    text = generate(paths[0])
    assert text.strip() and text == generate(tmp_path / "whole.gguf")
