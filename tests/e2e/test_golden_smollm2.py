"""Whole files, byte for byte, on the real model: every golden-e2e llama-quantize run on SmolLM2-135M (all ftypes,
with and without imatrix, overrides, pruning, KV overrides, split files) re-run with qf from the same input."""

from __future__ import annotations

import hashlib
import json

import pytest
from golden_e2e import parse_command, quant_cases

import qf
from paths import GOLDEN_E2E, data_params
from qf.gguf_io import GGUFFile, GGUFStreamWriter, OutTensor, make_kv

pytestmark = pytest.mark.e2e


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope="session")
def smollm2_splits(smollm2_f32, tmp_path_factory):
    """The same model split as `llama-gguf-split --split-max-tensors 100` split it (golden split-input manifest)."""
    from gguf.constants import GGUFValueType as T

    manifest = json.loads((GOLDEN_E2E / "smollm2" / "split-input" / "manifest.json").read_text())
    src = GGUFFile.open(smollm2_f32)
    folder = tmp_path_factory.mktemp("split-input")
    n = len(manifest["files"])
    total = sum(len(f["tensors"]) for f in manifest["files"])
    paths = []
    for i, fm in enumerate(manifest["files"]):
        split = [make_kv("split.no", T.UINT16, i), make_kv("split.tensors.count", T.INT32, total),
                 make_kv("split.count", T.UINT16, n)]
        kvs = (src.kvs if i == 0 else []) + split
        tensors = [src.tensor(t["name"]) for t in fm["tensors"]]
        path = folder / fm["path"]
        with open(path, "wb") as fh:
            w = GGUFStreamWriter(fh, kvs, [OutTensor(t.name, t.shape, t.type_id, t.n_bytes) for t in tensors])
            for t in tensors:
                w.begin(t.name)
                w.write(src.tensor_data(t))
            w.close()
        paths.append(path)
    return paths


def cases():
    return data_params([pytest.param(name, manifest, id=name) for name, _folder, manifest in quant_cases("smollm2")],
                       GOLDEN_E2E / "smollm2" / "quant", 2)


@pytest.mark.parametrize("name,manifest", cases())
def test_whole_file_identical(name, manifest, smollm2_f32, smollm2_splits, tmp_path, monkeypatch):
    opts, pos = parse_command(manifest["command"])
    monkeypatch.chdir(GOLDEN_E2E / manifest["cwd"])
    tensor_type_file = opts.pop("tensor_type_file", None)
    if tensor_type_file:
        for token in open(tensor_type_file).read().split():
            pattern, _, type_name = token.partition("=")
            opts["tensor_types"].append((pattern.lower(), type_name))
    source = smollm2_splits[0] if opts.get("keep_split") else smollm2_f32
    out = tmp_path / ("out" if opts.get("keep_split") else "out.gguf")
    qf.quantize_file(source, out, pos[2] if len(pos) > 2 else pos[1], threads=2, **opts)
    produced = sorted(tmp_path.glob("out*"))
    assert [p.stat().st_size for p in produced] == [f["size"] for f in manifest["files"]]
    assert [sha256(p) for p in produced] == [f["sha256"] for f in manifest["files"]]
