"""The README's promises about `qf quantize`, each asserted by value on a real subprocess:

* exit codes: 0 success, 1 bad input, 2 usage, 3 plugin error, each error one line (130/143/129 for signals mid-run,
  devices, FIFOs, directories, a full disk and outputs over input splits: tests/app/test_hostile.py);
* the input is never touched: after success and after a refusal its bytes are unchanged; an output path that names
  the input however it is spelled (a relative symlink, a symlinked folder, ``/./``, the default output name) is refused;
* output appears only when complete: no output and no temporary file after any failure;
* ``--dry-run`` prints the plan table (columns, sizes, reasons, summary) and writes nothing;
* ``--keep-split`` writes one output per input split, each tensor with the bytes of quantizing the unsplit model.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_factory import llama_tensors, write_model, write_splits
from qf.gguf_io import GGUFFile

BAD_INPUT, USAGE, PLUGIN, INTERRUPTED = 1, 2, 3, 130  # README "Exit codes"
MiB = 1024 * 1024


def qf(*args, cwd=None, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "qf", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=None if env is None else {**os.environ, **env}, **kw)


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".qf-tmp-" in p.name)


def error_lines(result) -> list[str]:
    return [ln for ln in result.stderr.splitlines() if ln.strip()]


@pytest.fixture
def model(tmp_path):
    return write_model(tmp_path / "m.gguf")


# ---------------------------------------------------------------------------------------------------------------------
# exit codes


def test_exit_0_success_writes_a_valid_file_and_leaves_the_input(model, tmp_path):
    before = sha(model)
    out = tmp_path / "o.gguf"
    result = qf("quantize", "-q", model, out, "Q8_0")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert sha(model) == before
    f = GGUFFile.open(out)
    assert f.get("general.file_type") == 7
    assert sorted(t.name for t in f.tensors) == sorted(t.name for t in GGUFFile.open(model).tensors)
    assert {t.type_id for t in f.tensors} == {0, 8}  # F32 norms, Q8_0 matrices
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("args,needle", [
    (["{missing}", "{out}", "Q8_0"], "cannot open"),
    (["{bad}", "{out}", "Q8_0"], "not a GGUF file"),
    (["--imatrix", "{missing}", "{model}", "{out}", "Q4_0"], "missing.gguf"),
])
def test_exit_1_bad_input(model, tmp_path, args, needle):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(3))
    out = tmp_path / "o.gguf"
    names = {"missing": tmp_path / "missing.gguf", "bad": bad, "out": out, "model": model}
    result = qf("quantize", "-q", *[a.format(**names) for a in args])
    assert result.returncode == BAD_INPUT, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("qf: error: ") and needle in lines[0], result.stderr
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("args,needle", [
    (["{model}", "{out}", "Q9_K"], "invalid ftype 'Q9_K'"),  # unknown ftype name
    (["--tensor-type", "attn=q9_9", "{model}", "{out}", "Q8_0"], "unknown quant type 'q9_9'"),
    (["--strategy", "nope", "{model}", "{out}", "Q8_0"], "unknown strategy 'nope'"),
    (["--prune-layers", "0,7", "{model}", "{out}", "Q4_0"], "out of range"),  # a bad option value
    (["{model}"], "missing ftype"),
    (["{model}", "{out}", "Q8_0", "2", "3"], "unexpected arguments"),
])
def test_exit_2_usage(model, tmp_path, args, needle):
    out = tmp_path / "o.gguf"
    result = qf("quantize", "-q", *[a.format(model=model, out=out) for a in args])
    assert result.returncode == USAGE, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("qf: error: ") and needle in lines[0], result.stderr
    assert not out.exists() and leftovers(tmp_path) == []


CLICK_USAGE = [["quantize", "--no-such-option", "{model}", "Q8_0"], ["quantize", "--threads", "0", "{model}", "Q8_0"],
               ["no-such-command"]]


@pytest.mark.parametrize("args", CLICK_USAGE, ids=["unknown-option", "bad-threads", "unknown-command"])
def test_exit_2_for_options_the_parser_refuses(model, args):
    result = qf(*[a.format(model=model) for a in args])
    assert result.returncode == USAGE, result.stderr
    assert not (model.parent / "ggml-model-Q8_0.gguf").exists()


@pytest.mark.parametrize("args", CLICK_USAGE, ids=["unknown-option", "bad-threads", "unknown-command"])
def test_parser_errors_are_one_line(model, args):
    result = qf(*[a.format(model=model) for a in args])
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("qf: error: "), result.stderr


def broken_plugin_site(folder: Path) -> Path:
    """A third-party distribution whose plugin registers a second 'Q4_0' (PYTHONPATH=folder makes it visible)."""
    site = folder / "site"
    dist = site / "qf_dup-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: qf-dup\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[qf]\ndup = qf_dup\n")
    (site / "qf_dup.py").write_text(
        "from qf import QuantType, hookimpl\n\n"
        "@hookimpl\n"
        "def qf_register_quant_types(registrar):\n"
        "    registrar.add_quant_type(QuantType('q4_0', 201, 32, 18, 'qf_dup:X', ('symmetric',)))\n")
    return site


@pytest.mark.parametrize("how", ["duplicate-type", "missing-target"])
def test_exit_3_plugin_error(model, tmp_path, how):
    out = tmp_path / "o.gguf"
    env = ({"PYTHONPATH": os.pathsep.join([str(broken_plugin_site(tmp_path)), os.environ.get("PYTHONPATH", "")])}
           if how == "duplicate-type" else {"QF_LOAD_PLUGINS": "float"})  # F32 names a target no plugin registers
    for args in (["list-types"], ["quantize", "-q", model, out, "Q8_0"]):
        result = qf(*args, env=env)
        assert result.returncode == PLUGIN, (args, result.stderr)
        last = error_lines(result)[-1]
        assert last.startswith("qf: error: ") and ("'dup'" if how == "duplicate-type" else "'float'") in last, last
        assert not out.exists() and leftovers(tmp_path) == []


def test_plugin_error_is_one_line(model, tmp_path):
    result = qf("list-types", env={"QF_LOAD_PLUGINS": "float"})
    assert len(error_lines(result)) == 1, result.stderr


# ---------------------------------------------------------------------------------------------------------------------
# the input is never touched: outputs that alias it are refused


def alias(kind: str, model: Path) -> Path:
    folder = model.parent
    if kind == "same":
        return model
    if kind == "dotdot":
        (folder / "sub").mkdir()
        return folder / "sub" / ".." / model.name
    if kind == "dot-slash":
        return folder / "." / model.name
    if kind == "symlink":
        (folder / "link.gguf").symlink_to(model)
        return folder / "link.gguf"
    if kind == "relative-symlink":
        (folder / "rel.gguf").symlink_to(model.name)
        return folder / "rel.gguf"
    if kind == "hardlink":
        os.link(model, folder / "hard.gguf")
        return folder / "hard.gguf"
    if kind == "symlinked-folder":
        (folder / "dirlink").symlink_to(folder, target_is_directory=True)
        return folder / "dirlink" / model.name
    raise ValueError(kind)


# tests/app/test_hostile.py covers `sub/..`, a hard link, an absolute symlink and `./m.gguf`; these are the others
ALIASES = ["same", "dot-slash", "relative-symlink", "symlinked-folder"]


@pytest.mark.parametrize("kind", ALIASES)
def test_output_aliasing_the_input_is_refused(model, kind):
    out = alias(kind, model)
    before, listing = sha(model), sorted(p.name for p in model.parent.iterdir())
    result = qf("quantize", "-q", model, out, "Q8_0")
    assert result.returncode == USAGE, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and "input and output files are the same" in lines[0], result.stderr
    assert sha(model) == before
    assert sorted(p.name for p in model.parent.iterdir()) == listing  # nothing added, nothing replaced
    if kind.endswith("symlink"):
        assert out.is_symlink()


def test_default_output_name_equal_to_the_input_is_refused(tmp_path):
    """`qf quantize DIR/ggml-model-Q8_0.gguf Q8_0` would write DIR/ggml-model-Q8_0.gguf: the input itself."""
    src = write_model(tmp_path / "ggml-model-Q8_0.gguf")
    before = sha(src)
    result = qf("quantize", "-q", src, "Q8_0")
    assert result.returncode == USAGE and "input and output files are the same" in result.stderr, result.stderr
    assert sha(src) == before


# ---------------------------------------------------------------------------------------------------------------------
# --dry-run: the plan table


def expected_bytes(shape, type_name: str) -> int:
    n = int(np.prod(shape))
    return {"f32": 4 * n, "f16": 2 * n, "q4_0": n // 32 * 18, "q8_0": n // 32 * 34}[type_name]


def test_dry_run_table(model, tmp_path):
    before = sha(model)
    result = qf("quantize", "--dry-run", model, "Q4_0")
    assert result.returncode == 0, result.stderr
    assert sha(model) == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]
    plan = json.loads(qf("quantize", "--dry-run", "--json", model, "Q4_0").stdout)
    lines = result.stdout.splitlines()
    header, rows, tail = lines[0], lines[1:1 + len(plan["tensors"])], lines[1 + len(plan["tensors"]):]
    columns = ["#", "tensor", "shape", "from", "type", "MiB", "reason"]
    assert header.split() == columns
    starts = [header.index(" " + c + " ") + 1 if i else 0 for i, c in enumerate(columns[:-1])] + \
        [header.rindex(" reason") + 1]
    assert all(header[s - 2:s] == "  " for s in starts[1:])  # columns two spaces apart
    shapes = llama_tensors()
    n_elements = bytes_in = bytes_out = 0
    for i, (line, t) in enumerate(zip(rows, plan["tensors"])):
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        assert line == line.rstrip()
        assert cells[0] == str(i + 1) and cells[1] == t["name"]
        shape = shapes[t["name"]]
        assert cells[2] == "x".join(map(str, shape)) and cells[3] == "f32"
        kind = "f32" if len(shape) == 1 else "q8_0" if t["name"] == "token_embd.weight" else "q4_0"
        assert cells[4] == kind, t["name"]
        size_in, size_out = expected_bytes(shape, "f32"), expected_bytes(shape, kind)
        assert (t["bytes_in"], t["bytes"]) == (size_in, size_out)
        assert cells[5] == (f"{size_in / MiB:.3f}" if kind == "f32" else f"{size_in / MiB:.2f} -> {size_out / MiB:.2f}")
        assert cells[6] == t["reason"] and cells[6] == ("1-D" if kind == "f32" else cells[6])
        n_elements += int(np.prod(shape))
        bytes_in, bytes_out = bytes_in + size_in, bytes_out + size_out
    assert len(rows) == len(shapes) == 20
    assert tail == [f"model size  = {bytes_in / MiB:8.2f} MiB ({bytes_in * 8 / n_elements:.2f} BPW)",
                    f"quant size  = {bytes_out / MiB:8.2f} MiB ({bytes_out * 8 / n_elements:.2f} BPW)",
                    "WARNING: 1 of 20 tensor(s) required fallback quantization"]
    assert rows[1].split()[:5] == ["2", "token_embd.weight", "64x96", "f32", "q8_0"]
    assert "fallback" in rows[1] and rows[2].endswith("ftype Q4_0")


# ---------------------------------------------------------------------------------------------------------------------
# --keep-split


@pytest.mark.parametrize("n_splits", [2, 3])
def test_keep_split_bytes_equal_quantizing_the_whole_model(tmp_path, n_splits):
    whole = write_model(tmp_path / "whole.gguf", dtype="F16")
    splits = write_splits(whole, tmp_path, "in", n_splits)
    before = [sha(p) for p in splits]
    ref = tmp_path / "ref.gguf"
    assert qf("quantize", "-q", whole, ref, "Q4_K_M").returncode == 0
    result = qf("quantize", "-q", "--keep-split", splits[0], tmp_path / "out.gguf", "Q4_K_M")
    assert result.returncode == 0, result.stderr
    assert [sha(p) for p in splits] == before
    outs = [tmp_path / f"out-{i + 1:05d}-of-{n_splits:05d}.gguf" for i in range(n_splits)]
    assert sorted(p.name for p in tmp_path.glob("out*")) == [p.name for p in outs]
    reference = GGUFFile.open(ref)
    seen = []
    for i, (inp, out) in enumerate(zip(splits, outs)):
        f_in, f_out = GGUFFile.open(inp), GGUFFile.open(out)
        assert [t.name for t in f_out.tensors] == [t.name for t in f_in.tensors]  # the input's split, its order
        assert (f_out.get("split.no"), f_out.get("split.count"), f_out.get("split.tensors.count")) == \
            (i, n_splits, len(reference.tensors))
        assert (f_out.get("general.file_type") is not None) == (i == 0)  # the model's KVs in the first split only
        for t in f_out.tensors:
            r = reference.tensor(t.name)
            assert (t.type_id, t.shape) == (r.type_id, r.shape), t.name
            assert f_out.tensor_data(t).tobytes() == reference.tensor_data(r).tobytes(), t.name
            seen.append(t.name)
    assert sorted(seen) == sorted(t.name for t in reference.tensors)
    assert {kv.key: kv.value for kv in GGUFFile.open(outs[0]).kvs if not kv.key.startswith("split.")} == \
        {kv.key: kv.value for kv in reference.kvs}
