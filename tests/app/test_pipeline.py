"""Whole-file quantization: byte identity with llama-quantize, metadata, threads, experts, streaming memory."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import qf
from imatrix_files import write_dat
from model_factory import write_model
from paths import GOLDEN_E2E, need
from qf.gguf_io import GGUFFile
from qf.imatrix import Imatrix


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


SYNTHETIC = ["llama", "qwen3moe", "glm4moe", "deepseek2"]


@pytest.mark.parametrize("arch", SYNTHETIC)
def test_synthetic_q8_0_whole_file_identical(arch, tmp_path, monkeypatch):
    folder = need(GOLDEN_E2E / "synthetic" / arch)
    manifest = json.loads((folder / "quant" / "Q8_0" / "manifest.json").read_text())
    monkeypatch.chdir(folder)
    out = tmp_path / "out.gguf"
    qf.quantize_file(f"synthetic-{arch}-F32.gguf", out, "Q8_0", threads=2)
    assert sha256(out) == manifest["output_sha256"]


def test_threads_do_not_change_bytes(tmp_path):
    src = write_model(tmp_path / "m.gguf", dtype="F16")
    im = write_dat(tmp_path / "im.dat", {f"blk.{i}.{n}.weight": np.random.default_rng(i).lognormal(size=64)
                                         for i in range(2) for n in ("attn_q", "ffn_up", "ffn_gate")})
    hashes = set()
    for threads in (1, 2, 3):
        out = tmp_path / f"out{threads}.gguf"
        qf.quantize_file(src, out, "Q4_1", threads=threads, imatrix=im)
        hashes.add(sha256(out))
    assert len(hashes) == 1


def test_tensor_bytes_equal_quantize_rows_with_imatrix(tmp_path):
    src = write_model(tmp_path / "m.gguf", dtype="BF16")
    values = np.random.default_rng(3).lognormal(size=64).astype(np.float32)
    im = write_dat(tmp_path / "im.dat", {"blk.0.attn_q.weight": values})
    out = tmp_path / "o.gguf"
    qf.quantize_file(src, out, "Q5_0", imatrix=im)
    f_in, f_out = GGUFFile.open(src), GGUFFile.open(out)
    t_in = f_in.tensor("blk.0.attn_q.weight")
    x = qf.dequantize_rows("BF16", f_in.rows(t_in, 0, t_in.n_rows), 64)
    t_out = f_out.tensor("blk.0.attn_q.weight")
    np.testing.assert_array_equal(f_out.rows(t_out, 0, t_out.n_rows), qf.quantize_rows("Q5_0", x, values))
    other = f_out.tensor("blk.0.attn_k.weight")  # no imatrix entry: plain path
    x = qf.dequantize_rows("BF16", f_in.rows(f_in.tensor("blk.0.attn_k.weight"), 0, other.n_rows), 64)
    np.testing.assert_array_equal(f_out.rows(other, 0, other.n_rows), qf.quantize_rows("Q5_0", x))


def test_metadata_keys_like_llama_quantize(tmp_path):
    src = write_model(tmp_path / "m.gguf")
    im = write_dat(tmp_path / "im.dat", {"blk.0.attn_q.weight": np.ones(64)}, chunks=7, dataset="d.txt")
    out = tmp_path / "o.gguf"
    qf.quantize_file(src, out, "Q4_0", imatrix=str(im), override_kv=["general.name=str:renamed", "x.n=int:-5"])
    kvs = GGUFFile.open(out).kvs
    keys = [kv.key for kv in kvs]
    assert keys[-8:] == ["general.quantization_version", "general.file_type", "general.name", "x.n",
                         "quantize.imatrix.file", "quantize.imatrix.dataset", "quantize.imatrix.entries_count",
                         "quantize.imatrix.chunks_count"]
    values = {kv.key: kv.value for kv in kvs}
    assert values["general.file_type"] == 2 and values["general.quantization_version"] == 2
    assert values["quantize.imatrix.file"] == str(im) and values["quantize.imatrix.dataset"] == "d.txt"
    assert values["quantize.imatrix.entries_count"] == 1 and values["quantize.imatrix.chunks_count"] == 7
    assert values["general.name"] == "renamed" and values["x.n"] == 5


def test_expert_tensors_use_their_imatrix_slice(tmp_path):
    folder = need(GOLDEN_E2E / "synthetic" / "qwen3moe")
    out = tmp_path / "moe.gguf"
    qf.quantize_file(folder / "synthetic-qwen3moe-F32.gguf", out, "Q4_0", imatrix=folder / "imatrix.gguf")
    f_in, f_out = GGUFFile.open(folder / "synthetic-qwen3moe-F32.gguf"), GGUFFile.open(out)
    im = Imatrix.load(folder / "imatrix.gguf")
    name = "blk.1.ffn_down_exps.weight"
    t_in, t_out = f_in.tensor(name), f_out.tensor(name)
    ne0, rows, n_exp = t_in.shape
    weights = im.entries[name].reshape(n_exp, ne0)
    for e in (0, n_exp - 1):
        x = f_in.rows(t_in, e * rows, (e + 1) * rows).view(np.float32)
        expected = qf.quantize_rows("Q4_0", x, weights[e])
        np.testing.assert_array_equal(f_out.rows(t_out, e * rows, (e + 1) * rows), expected)


def test_ctrl_c_leaves_nothing(tmp_path, monkeypatch):
    from qf import execute

    src = write_model(tmp_path / "m.gguf")
    out = tmp_path / "o.gguf"
    calls = []

    original = execute.OrderedWriter.write

    def interrupt(self, unit, data):
        calls.append(unit)
        if len(calls) == 3:
            raise KeyboardInterrupt
        original(self, unit, data)

    monkeypatch.setattr(execute.OrderedWriter, "write", interrupt)
    with pytest.raises(KeyboardInterrupt):
        qf.quantize_file(src, out, "Q8_0")
    assert list(tmp_path.iterdir()) == [src]


PEAK_RSS = """
import sys
import qf
qf.quantize_file(sys.argv[3], sys.argv[2], "Q8_0", threads=2)  # warm up: kernels loaded/compiled
with open("/proc/self/clear_refs", "w") as fh:  # reset the peak-RSS counter (VmHWM)
    fh.write("5")
qf.quantize_file(sys.argv[1], sys.argv[2], "Q8_0", threads=2)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(int(status["VmHWM"].split()[0]) * 1024)
"""


def test_peak_memory_does_not_grow_with_model_size(tmp_path):
    """Two models, 4x apart in size (big tensors, small slabs): peak RSS stays within a few slabs."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak RSS")
    small = write_model(tmp_path / "small.gguf")
    peaks = {}
    for layers in (2, 8):
        shapes = {f"blk.{i}.ffn_up.weight": (1024, 4096) for i in range(layers)}  # 16 MiB each in F32
        src = write_model(tmp_path / f"m{layers}.gguf", shapes=shapes)
        env = {"QF_SLAB_BYTES": str(4 << 20)}
        args = [str(src), str(tmp_path / f"o{layers}.gguf"), str(small)]
        result = subprocess.run([sys.executable, "-c", PEAK_RSS, *args],
                                capture_output=True, text=True, env={**os.environ, **env}, check=True)
        peaks[layers] = int(result.stdout.strip())
    growth = peaks[8] - peaks[2]
    assert growth < 24 << 20, f"peak RSS grew by {growth / 2**20:.1f} MiB for 96 MiB more model"
