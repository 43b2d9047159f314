"""The command line: listings, and every bad input giving one clear line, a non-zero exit and no output file."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time

import numpy as np
import pytest

import qf as qf_api
from imatrix_files import write_dat, write_imatrix_gguf
from model_factory import llama_tensors, write_model
from qf.gguf_io import GGUFFile


def qf(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "qf", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def qfq(command, *args):
    """A quiet run (-q): the only stderr output left is the error line."""
    return qf(command, "-q", *args)


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_list_types_is_fast_and_compiles_nothing():
    start = time.perf_counter()
    result = qf("list-types", "--json")
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    types = {t["name"]: t for t in json.loads(result.stdout)}
    assert types["Q4_0"]["id"] == 2 and types["Q4_0"]["block_size"] == 32 and types["Q4_0"]["type_size"] == 18
    assert types["Q4_0"]["bits_per_weight"] == 4.5 and types["Q4_0"]["plugin"] == "legacy"
    assert set(types["Q4_0"]["strategies"]) >= {"ggml", "rtn"}
    code = ("import sys; from qf.app.cli import main\ntry: main(['list-types'])\nexcept SystemExit: pass\n"
            "print([m for m in sys.modules if m.startswith('numba') or m.endswith('_kernels')], file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stderr.strip().splitlines()[-1] == "[]"
    assert elapsed < 5  # generous: cold interpreter start on a loaded CI machine; typical is ~0.35 s


@pytest.mark.parametrize("command", ["list-strategies", "list-arches", "plugins", "list-ftypes"])
def test_listings(command):
    result = qf(command)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    result = qf(command, "--json")
    assert json.loads(result.stdout)


def test_list_arches_names_the_imatrix_engine_auto_takes():
    """`qf list-arches` says which forward engine `qf imatrix --engine auto` runs for each architecture."""
    from qf_arches.imatrix.engines import numpy_handles

    items = json.loads(qf("list-arches", "--json").stdout)
    engines = {i["name"]: i["imatrix_engine"] for i in items}
    assert engines["llama"] == engines["glm4moe"] == engines["deepseek2"] == "numpy"
    assert engines["generic"] == engines["gemma3"] == "llama.cpp"
    for i in items:
        arch = i["gguf_names"][0]
        assert (i["imatrix_engine"] == "numpy") == (arch != "*" and numpy_handles(arch)), i["name"]
    assert "qf imatrix" in qf("list-arches").stdout.splitlines()[0]


@pytest.mark.parametrize("command", ["quantize", "list-types", "list-strategies", "list-arches", "plugins"])
def test_help(command):
    result = qf(command, "--help")
    assert result.returncode == 0 and "Usage:" in result.stdout


@pytest.fixture
def model(tmp_path):
    return write_model(tmp_path / "model.gguf")


BAD_INPUT, USAGE, PLUGIN, INTERRUPTED = 1, 2, 3, 130  # README "Exit codes"


def check_failure(result, out, *needles, code):
    """The README's error contract: the exit code of the error's kind, one line on stderr, no output, no temp file."""
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("qf: error: ")
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".qf-tmp-" in p.name]


def test_not_a_gguf(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, this is not a model" * 4)
    out = tmp_path / "out.gguf"
    check_failure(qfq("quantize", bad, out, "Q8_0"), out, "notes.txt", "not a GGUF file", code=BAD_INPUT)


def test_truncated(model, tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(model.read_bytes()[:-1000])
    out = tmp_path / "out.gguf"
    check_failure(qfq("quantize", cut, out, "Q8_0"), out, "cut.gguf", "truncated", code=BAD_INPUT)


@pytest.mark.parametrize("args,needle", [
    (["Q9_K"], "invalid ftype 'Q9_K'"),
    (["--tensor-type", "attn=q9_9", "Q8_0"], "unknown quant type 'q9_9'"),
    (["--strategy", "nope", "Q8_0"], "unknown strategy 'nope'"),
    (["--tensor-type", "attn(=q8_0", "Q8_0"], "invalid regex 'attn(': missing ), unterminated subpattern"),
    (["--tensor-type", "attn_q", "Q8_0"], "malformed tensor type 'attn_q'"),
])
def test_unknown_names_and_bad_options(model, tmp_path, args, needle):
    out = tmp_path / "out.gguf"
    *opts, ftype = args
    check_failure(qfq("quantize", *opts, model, out, ftype), out, needle, code=USAGE)


@pytest.mark.parametrize("dtype", ["F32", "F16"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weight(tmp_path, dtype, value):
    src = write_model(tmp_path / "m.gguf", dtype=dtype, poison={"blk.1.ffn_up.weight": (64 * 5 + 7, value)})
    before = sha(src)
    out = tmp_path / "out.gguf"
    check_failure(qfq("quantize", src, out, "Q4_0"), out, "blk.1.ffn_up.weight", "row 5", "column 7", code=BAD_INPUT)
    assert sha(src) == before


def test_imatrix_wrong_size(model, tmp_path):
    im = write_dat(tmp_path / "im.dat", {"blk.0.attn_q.weight": np.ones(48)})
    out = tmp_path / "out.gguf"
    check_failure(qfq("quantize", "--imatrix", im, model, out, "Q4_0"), out, "im.dat", "blk.0.attn_q.weight",
                  "has 48 values", code=BAD_INPUT)


def test_imatrix_non_finite(model, tmp_path):
    values = np.ones(64, np.float32)
    values[3] = np.nan
    im = write_imatrix_gguf(tmp_path / "im.gguf", {"blk.0.attn_q.weight": values})
    out = tmp_path / "out.gguf"
    check_failure(qfq("quantize", "--imatrix", im, model, out, "Q4_0"), out, "im.gguf", "non-finite", "index 3",
                  code=BAD_INPUT)


def test_imatrix_wrong_format(model, tmp_path):
    im = tmp_path / "im.bin"
    im.write_bytes(b"\x00\x01" * 50)
    out = tmp_path / "out.gguf"
    check_failure(qfq("quantize", "--imatrix", im, model, out, "Q4_0"), out, "im.bin", code=BAD_INPUT)


def test_output_equal_to_input(model):
    before = sha(model)
    result = qf("quantize", model, model, "Q8_0")
    assert result.returncode == USAGE and "input and output files are the same" in result.stderr
    assert sha(model) == before


def test_quantized_input_needs_allow_requantize(tmp_path):
    src = write_model(tmp_path / "q.gguf", dtype="Q8_0")
    out = tmp_path / "out.gguf"
    check_failure(qfq("quantize", src, out, "Q4_0"), out, "requantizing is disabled", "--allow-requantize", "q8_0",
                  code=BAD_INPUT)
    before = sha(src)
    result = qf("quantize", "-q", "--allow-requantize", src, out, "Q4_0")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""  # -q: nothing at all on success
    assert sha(src) == before
    f = GGUFFile.open(out)
    t = f.tensor("blk.0.attn_q.weight")
    assert t.type_id == 2  # Q4_0, requantized from the Q8_0 values
    x = qf_api.dequantize_rows("Q8_0", GGUFFile.open(src).rows(GGUFFile.open(src).tensor(t.name), 0, t.n_rows), 64)
    assert np.array_equal(f.rows(t, 0, t.n_rows), qf_api.quantize_rows("Q4_0", x))


def test_shape_not_divisible(tmp_path):
    shapes = llama_tensors(n_embd=48, n_ff=96, n_kv=48)  # 48 % 32 != 0
    src = write_model(tmp_path / "odd.gguf", shapes=shapes)
    out = tmp_path / "out.gguf"
    check_failure(qfq("quantize", "--no-fallback", src, out, "Q4_0"), out, "not a multiple", "block size 32",
                  code=BAD_INPUT)
    result = qf("quantize", "-q", src, out, "Q4_0")  # llama.cpp's rule: fall back to F16
    assert result.returncode == 0, result.stderr
    assert GGUFFile.open(out).tensor("blk.0.attn_q.weight").type_id == 1  # F16


def test_positional_thread_count_and_default_output(model):
    result = qf("quantize", "-q", model, "Q8_0", "1")
    assert result.returncode == 0, result.stderr
    out = model.parent / "ggml-model-Q8_0.gguf"
    assert GGUFFile.open(out).get("general.file_type") == 7  # LLAMA_FTYPE_MOSTLY_Q8_0


def test_dry_run_writes_nothing(model, tmp_path):
    result = qf("quantize", "--dry-run", "--json", model, "Q4_0")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["ftype"] == "Q4_0" and plan["bytes_out"] < plan["bytes_in"]
    names = {t["name"]: t for t in plan["tensors"]}
    assert names["blk.0.attn_norm.weight"]["type"] == "f32" and names["blk.0.attn_q.weight"]["type"] == "q4_0"
    assert not list(tmp_path.glob("ggml-model*"))


def test_scale_overflow_is_refused_like_llama_cpp(tmp_path):
    """Weights beyond the fp16 range make Q4_1's min overflow: llama.cpp's row validation refuses, so does qf."""
    src = write_model(tmp_path / "big.gguf", poison={"blk.0.ffn_gate.weight": (64 * 3 + 5, -1.0e6)})
    out = tmp_path / "out.gguf"
    check_failure(qfq("quantize", "--pure", src, out, "Q4_1"), out, "blk.0.ffn_gate.weight", "row 3",
                  "overflow Q4_1's 16-bit scales", code=BAD_INPUT)
    result = qf("quantize", "-q", "--pure", src, out, "Q8_0")  # 1e6/127 fits in fp16: fine
    assert result.returncode == 0, result.stderr
    assert GGUFFile.open(out).tensor("blk.0.ffn_gate.weight").type_id == 8


@pytest.mark.parametrize("ftype", ["Q4_K_M", "IQ4_XS"])
def test_k_and_iq4_shapes_without_fallback(tmp_path, ftype):
    """Rows of 576 values (SmolLM2's width) do not fit 256-element blocks: with --no-fallback that is an error."""
    src = write_model(tmp_path / "m.gguf", shapes=llama_tensors(n_embd=576, n_ff=1536, n_kv=192))
    out = tmp_path / "out.gguf"
    check_failure(qfq("quantize", "--no-fallback", src, out, ftype), out, "row length 576", "block size 256",
                  code=BAD_INPUT)
    plan = json.loads(qf("quantize", "--dry-run", "--json", src, ftype).stdout)  # default: llama.cpp's fallback
    assert plan["n_fallback"] > 0
    assert {t["fallback_from"] for t in plan["tensors"] if t["fallback_from"]} <= {"Q4_K", "IQ4_XS", "Q5_K", "Q6_K"}


@pytest.mark.parametrize("ftype", ["IQ2_XXS", "IQ1_S", "IQ3_XXS", "Q2_K_S"])
def test_type_needing_imatrix_without_one(tmp_path, ftype):
    src = write_model(tmp_path / "m.gguf", shapes=llama_tensors(n_embd=256, n_ff=512, n_kv=256, n_vocab=256))
    out = tmp_path / "out.gguf"
    check_failure(qfq("quantize", src, out, ftype), out, "no --imatrix given", "blk.0.", "--on-missing-imatrix",
                  code=BAD_INPUT)
