"""Hostile and careless use of ``qf quantize``: outputs that are devices, FIFOs, links or inputs; a full disk; signals
mid-run; bad option values.  Each case: the exit code, one line (no traceback), nothing left behind, inputs
untouched."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import qf
from imatrix_files import write_imatrix_gguf
from model_factory import llama_tensors, write_model
from qf.errors import ImatrixError, InvalidWeightsError, OutputError, UsageError


def run(*args, preexec_fn=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qf", "quantize", "-q", *map(str, args)], capture_output=True,
                          text=True, preexec_fn=preexec_fn, cwd=cwd, timeout=600)


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".qf-tmp-" in p.name)


def one_line_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qf: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def model(tmp_path):
    return write_model(tmp_path / "m.gguf", shapes=llama_tensors(n_embd=256, n_ff=512, n_kv=256, n_vocab=128))


@pytest.fixture
def big_model(tmp_path):
    """Large enough that a `exhaustive` run takes seconds: time to send a signal mid-run."""
    shapes = llama_tensors(n_embd=1024, n_ff=2816, n_kv=1024, n_vocab=512, n_layer=4)
    return write_model(tmp_path / "big.gguf", shapes=shapes)


# -- outputs that are not regular files ------------------------------------------------------------------------------

def test_character_device_is_written_in_place_never_replaced(model):
    before = os.stat("/dev/null")
    result = run(model, "/dev/null", "Q8_0")
    assert result.returncode == 0, result.stderr
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert leftovers(Path("/dev")) == []


def test_fifo_is_streamed_into(model, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    result = run(model, fifo, "Q8_0")
    reader.join(timeout=60)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    reference = tmp_path / "ref.gguf"
    assert run(model, reference, "Q8_0").returncode == 0
    assert received and received[0] == reference.read_bytes()


def test_symlink_output_writes_its_target_and_stays_a_link(model, tmp_path):
    target = tmp_path / "real" / "out.gguf"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "link.gguf"
    link.symlink_to(target)
    result = run(model, link, "Q8_0")
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes()[:4] == b"GGUF"
    assert leftovers(tmp_path) == [] and leftovers(target.parent) == []


@pytest.mark.parametrize("kind", ["directory", "missing folder"])
def test_unusable_output_path_fails_before_any_work(model, tmp_path, kind):
    out = tmp_path / "dir" if kind == "directory" else tmp_path / "nope" / "o.gguf"
    if kind == "directory":
        out.mkdir()
    start = time.perf_counter()
    result = run(model, out, "Q8_0")
    one_line_error(result, 2, str(out))
    assert time.perf_counter() - start < 30
    assert leftovers(tmp_path) == []


# -- outputs that are inputs -----------------------------------------------------------------------------------------

def test_output_aliasing_the_input_is_refused(model, tmp_path):
    before = sha(model)
    (tmp_path / "sub").mkdir()
    hard = tmp_path / "hard.gguf"
    os.link(model, hard)
    soft = tmp_path / "soft.gguf"
    soft.symlink_to(model)
    for alias in (tmp_path / "sub" / ".." / model.name, hard, soft, Path(".") / model.name):
        result = run(model, alias, "Q8_0", cwd=tmp_path)
        one_line_error(result, 2, "input and output files are the same")
    assert sha(model) == before and leftovers(tmp_path) == []


def test_output_over_the_imatrix_recipe_or_rule_file_is_refused(model, tmp_path):
    im = write_imatrix_gguf(tmp_path / "im.gguf", {"blk.0.attn_q.weight": np.ones(256, np.float32)})
    recipe = tmp_path / "r.toml"
    recipe.write_text('extends = "Q8_0"\n')
    rules = tmp_path / "rules.txt"
    rules.write_text("attn_v=q8_0\n")
    cases = [(["--imatrix", im], im, "imatrix"), (["--recipe", recipe], recipe, "recipe"),
             (["--tensor-type-file", rules], rules, "tensor type file")]
    for options, victim, what in cases:
        before = sha(victim)
        result = run(*options, model, victim, *([] if what == "recipe" else ["Q8_0"]))
        one_line_error(result, 2, f"is the {what}")
        assert sha(victim) == before
    assert leftovers(tmp_path) == []


def test_keep_split_output_over_an_input_split_is_refused(tmp_path):
    """Every split name --keep-split will write is checked against every input split."""
    from model_factory import write_split_model

    first = write_split_model(tmp_path / "in", n_split=2)
    parts = sorted(tmp_path.glob("in-*.gguf"))
    hashes = [sha(p) for p in parts]
    result = run("--keep-split", first, tmp_path / "in.gguf", "Q8_0")
    one_line_error(result, 2, "input and output files are the same")
    assert [sha(p) for p in parts] == hashes and leftovers(tmp_path) == []


# -- the disk, and signals, mid-run ----------------------------------------------------------------------------------

def test_disk_full_mid_run_leaves_nothing(model, tmp_path):
    out = tmp_path / "o.gguf"

    def small_files():  # a write past 64 KiB fails with EFBIG, as on a full disk (SIGXFSZ ignored)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    result = run(model, out, "Q8_0", preexec_fn=small_files)
    one_line_error(result, 1, "cannot write", str(out))
    assert not out.exists() and leftovers(tmp_path) == []


def test_space_is_checked_before_the_first_tensor(model, tmp_path, monkeypatch):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1 << 20))
    out = tmp_path / "o.gguf"
    with pytest.raises(OutputError, match="not enough space .* MiB are free"):
        qf.quantize_file(model, out, "Q8_0")
    assert not out.exists() and leftovers(tmp_path) == []
    qf.quantize_file(model, out, "Q8_0", no_space_check=True)
    assert out.exists()


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_signal_mid_run_cleans_up(big_model, tmp_path, sig, code):
    out = tmp_path / "o.gguf"
    before = sha(big_model)
    # a shell running us in the background (`cmd &`) ignores SIGINT, and a child inherits that: restore the default
    proc = subprocess.Popen([sys.executable, "-m", "qf", "quantize", "-q", "--strategy", "exhaustive",
                             str(big_model), str(out), "Q4_1", "1"], stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not leftovers(tmp_path) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert leftovers(tmp_path), "the run ended before it started writing"
    time.sleep(0.3)
    proc.send_signal(sig)
    stderr = proc.communicate(timeout=120)[1]
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not out.exists() and leftovers(tmp_path) == [] and sha(big_model) == before


# -- bad values ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["foo=int:abc", "foo=int:99999999999", "foo=float:1e39", "foo=float:nan",
                                  "foo=bool:yes", "foo", "foo=blob:1"])
def test_override_kv_values_are_checked(model, tmp_path, spec):
    one_line_error(run("--override-kv", spec, model, tmp_path / "o.gguf", "Q8_0"), 2, "--override-kv")
    assert not (tmp_path / "o.gguf").exists()


def test_recipe_with_a_trailing_thread_count(model, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('extends = "Q4_0"\n')
    out = tmp_path / "o.gguf"
    result = run("--recipe", recipe, model, out, "2")
    assert result.returncode == 0, result.stderr
    from qf.gguf_io import GGUFFile

    assert GGUFFile.open(out).get("general.file_type") == 2  # Q4_0 from `extends`, not ftype id 2's neighbour


@pytest.mark.parametrize("values,needle", [("zeros", "all-zero importances"), ("negative", "negative values")])
def test_unusable_imatrix_values_are_refused(model, tmp_path, values, needle):
    v = np.zeros(256, np.float32) if values == "zeros" else -np.ones(256, np.float32)
    im = write_imatrix_gguf(tmp_path / "im.gguf", {"blk.0.attn_q.weight": v})
    one_line_error(run("--imatrix", im, model, tmp_path / "o.gguf", "Q4_0"), 1, needle)
    assert not (tmp_path / "o.gguf").exists()


def test_absurd_thread_counts_are_clamped(model, tmp_path):
    result = subprocess.run([sys.executable, "-m", "qf", "quantize", "--threads", "100000", str(model),
                             str(tmp_path / "o.gguf"), "Q8_0"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "warning: 100000 threads requested" in result.stderr


# -- the Python API validates like the CLI ---------------------------------------------------------------------------

def test_api_errors_are_typed_one_liners():
    x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    with pytest.raises(UsageError, match="must be given by name"):
        qf.quantize_rows(2, x)
    with pytest.raises(UsageError, match="must be given by name"):
        qf.quantize_rows(None, x)
    with pytest.raises(ImatrixError, match="expected an array"):
        qf.quantize_rows("Q4_0", x, imatrix="abc")
    with pytest.raises(ImatrixError, match="must be finite and >= 0"):
        qf.quantize_rows("Q4_0", x, imatrix=-np.ones(64, np.float32))
    with pytest.raises(InvalidWeightsError, match="overflow Q4_0's 16-bit scales"):
        qf.quantize_rows("Q4_0", np.full((1, 32), 1e30, np.float32))
    with pytest.raises(InvalidWeightsError, match="expected uint8"):
        qf.dequantize_rows("Q4_0", np.zeros((1, 18), np.float32), 32)
    with pytest.raises(InvalidWeightsError, match="a positive multiple of the block size 32"):
        qf.dequantize_rows("Q4_0", np.zeros((1, 18), np.uint8), None)
    with pytest.raises(UsageError, match="unknown option"):
        qf.quantize_file("x.gguf", "y.gguf", "Q4_0", purity=True)
    with pytest.raises(UsageError, match="option pure: expected bool"):
        qf.quantize_file("x.gguf", "y.gguf", "Q4_0", pure="yes")


def test_a_signal_whose_raise_would_be_dropped_is_acted_on_at_the_next_call():
    """A signal that lands while numba compiles or loads a kernel runs its handler inside llvmlite's ctypes callback,
    where Python drops a raised exception (the run then went on for minutes, or died by SIGINT: a flaky CI failure).
    There the handler only records it, and the next kernel call raises."""
    import sys as _sys

    import numpy as np

    import qf
    from qf.app.pipeline import signals_raise
    from qf.errors import Interrupted, pending_signals

    code = compile("def callback():\n    return sys._getframe()\n", "/x/site-packages/llvmlite/binding/ffi.py", "exec")
    scope = {"sys": _sys}
    exec(code, scope)
    frame = scope["callback"]()  # a frame "inside llvmlite"
    x = np.ones((64, 4096), np.float32)
    with signals_raise():
        handler = signal.getsignal(signal.SIGTERM)
        handler(signal.SIGTERM, frame)  # recorded, not raised
        assert pending_signals == [signal.SIGTERM]
        with pytest.raises(Interrupted, match="SIGTERM"):
            qf.quantize_rows("Q8_0", x)
        with pytest.raises(Interrupted):  # and raised where the handler runs in Python code
            handler(signal.SIGTERM, _sys._getframe())
    assert pending_signals == []
    assert signal.getsignal(signal.SIGTERM) is not handler
