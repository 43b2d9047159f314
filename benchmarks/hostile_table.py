"""Every hostile or careless use of ``qf quantize`` we know of, run as a user would run it, one row each:

    python benchmarks/hostile_table.py [--markdown]

Each case runs ``python -m qf quantize ...`` (or a short Python API call) in a fresh folder and reports the exit code,
whether stderr is one line, whether it holds a traceback, what is left behind (hidden temporary files, or an output
under the final name where none should be), and whether every input (model parts, imatrix, recipe, rule file) has
the bytes and the inode it had.  A row fails if any of these differs from what the case expects; the script exits 1
if any row fails.  The tests in ``tests/app/test_hostile.py``, ``test_cli_contracts.py`` and ``tests/core/test_fuzz_*``
check the same cases one by one; this is the table for a reader.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests" / "core"), str(HERE.parent / "tests" / "support")]

import numpy as np  # noqa: E402
from gguf.constants import GGUFValueType as T  # noqa: E402
from test_fuzz_gguf import deep_array, header_from_parts  # noqa: E402

from imatrix_files import write_imatrix_gguf  # noqa: E402
from model_factory import llama_tensors, write_model, write_split_model  # noqa: E402
from qf.gguf_io import make_kv  # noqa: E402
from qf.gguf_io.kv import encode_string  # noqa: E402

SMALL = dict(n_embd=256, n_ff=512, n_kv=256, n_vocab=128)
BIG = dict(n_embd=1024, n_ff=2816, n_kv=1024, n_vocab=512, n_layer=4)


def qf_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "qf", "quantize", "-q", *map(str, args)]


def fingerprint(paths) -> dict:
    out = {}
    for p in paths:
        st = os.lstat(p)
        out[str(p)] = (st.st_ino, hashlib.sha256(Path(p).read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else "")
    return out


class Case:
    def __init__(
        self, name, expect_code, setup, *, output_allowed=False, check=None, preexec=None, signal_=None, python=None
    ):
        self.name, self.expect_code, self.setup = name, expect_code, setup
        self.output_allowed, self.check, self.preexec, self.signal, self.python = (
            output_allowed,
            check,
            preexec,
            signal_,
            python,
        )


def model_file(folder: Path, name="m.gguf", **kw) -> Path:
    return write_model(folder / name, shapes=llama_tensors(**{**SMALL, **kw.pop("shapes", {})}), **kw)


def raw_model(folder: Path, infos, kvs=()) -> Path:
    data = header_from_parts(3, [make_kv("general.architecture", T.STRING, "llama").raw, *kvs], infos, 512)
    (folder / "m.gguf").write_bytes(data)
    return folder / "m.gguf"


def run_case(case: Case, folder: Path) -> dict:
    """setup(folder) -> (argv after ``quantize -q`` or None for python, input paths, output path)"""
    args, inputs, out = case.setup(folder)
    before = fingerprint(inputs)
    if case.python is not None:
        cmd = [sys.executable, "-c", case.python.format(folder=folder)]
    else:
        cmd = qf_cmd(*args)
    if case.signal is not None:
        proc = subprocess.Popen(
            cmd,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.time() + 120
        while not any(".qf-tmp-" in p.name for p in folder.iterdir()) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(case.signal)
        stderr = proc.communicate(timeout=120)[1]
        code = proc.returncode
    else:
        r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=case.preexec, timeout=600, cwd=folder)
        stderr, code = r.stderr, r.returncode
    lines = [line for line in stderr.strip().splitlines() if line]
    left = sorted(p.name for p in folder.rglob("*") if ".qf-tmp-" in p.name)
    if out is not None and not case.output_allowed and os.path.lexists(out) and str(out) not in before:
        left.append(Path(out).name)
    after = fingerprint(inputs)
    extra = case.check(folder) if case.check else ""
    row = dict(
        case=case.name,
        code=code,
        expect=case.expect_code,
        lines=len(lines),
        traceback="Traceback" in stderr,
        leftovers=left,
        untouched=before == after,
        extra=extra,
        message=lines[-1] if lines else "",
    )
    row["ok"] = (
        code == case.expect_code
        and len(lines) <= 1
        and not row["traceback"]
        and not left
        and row["untouched"]
        and extra in ("", "yes")
    )
    return row


# -- the cases ------------------------------------------------------------------------------------------------------


def plain(ftype="Q8_0", *opts, out="o.gguf", **model_kw):
    def setup(folder):
        m = model_file(folder, **model_kw)
        return [*opts, m, folder / out, ftype], [m], folder / out

    return setup


def to_device(folder):
    m = model_file(folder)
    return [m, "/dev/null", "Q8_0"], [m], None


def to_fifo(folder):
    m = model_file(folder)
    fifo = folder / "fifo"
    os.mkfifo(fifo)
    sink = threading.Thread(target=lambda: Path(fifo).read_bytes(), daemon=True)
    sink.start()
    return [m, fifo, "Q8_0"], [m], None


def to_symlink(folder):
    m = model_file(folder)
    (folder / "real").mkdir()
    (folder / "link.gguf").symlink_to(folder / "real" / "o.gguf")
    return [m, folder / "link.gguf", "Q8_0"], [m], None


def kept(kind):
    def check(folder):
        p = {"device": Path("/dev/null"), "fifo": folder / "fifo", "symlink": folder / "link.gguf"}[kind]
        mode = os.lstat(p).st_mode
        ok = {"device": stat.S_ISCHR, "fifo": stat.S_ISFIFO, "symlink": stat.S_ISLNK}[kind](mode)
        if kind == "symlink":
            ok = ok and (folder / "real" / "o.gguf").stat().st_size > 0
        return "yes" if ok else "no"

    return check


def to_directory(folder):
    m = model_file(folder)
    (folder / "d").mkdir()
    return [m, folder / "d", "Q8_0"], [m], None


def alias(kind):
    def setup(folder):
        m = model_file(folder)
        if kind == "hardlink":
            os.link(m, folder / "h.gguf")
            return [m, folder / "h.gguf", "Q8_0"], [m], None
        if kind == "symlink":
            (folder / "s.gguf").symlink_to(m)
            return [m, folder / "s.gguf", "Q8_0"], [m], None
        if kind == "dot-path":
            return [m, "./m.gguf", "Q8_0"], [m], None
        (folder / "sub").mkdir()
        return [m, folder / "sub" / ".." / "m.gguf", "Q8_0"], [m], None

    return setup


def over_split(folder):
    first = write_split_model(folder / "in", n_split=2, shapes=llama_tensors(**SMALL))
    parts = sorted(folder.glob("in-*.gguf"))
    return ["--keep-split", first, folder / "in.gguf", "Q8_0"], parts, None


def over_side_file(what):
    def setup(folder):
        m = model_file(folder)
        if what == "imatrix":
            f = write_imatrix_gguf(folder / "im.gguf", {"blk.0.attn_q.weight": np.ones(256, np.float32)})
            return ["--imatrix", f, m, f, "Q8_0"], [m, f], None
        if what == "recipe":
            f = folder / "r.toml"
            f.write_text('extends = "Q8_0"\n')
            return ["--recipe", f, m, f], [m, f], None
        f = folder / "rules.txt"
        f.write_text("attn_v=q8_0\n")
        return ["--tensor-type-file", f, m, f, "Q8_0"], [m, f], None

    return setup


def fsize_limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))


def big(folder):
    m = write_model(folder / "big.gguf", shapes=llama_tensors(**BIG))
    return ["--strategy", "exhaustive", m, folder / "o.gguf", "Q4_1", "1"], [m], folder / "o.gguf"


def recipe_case(text: bytes | str, *tail):
    def setup(folder):
        m = model_file(folder)
        r = folder / "r.toml"
        r.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["--recipe", r, m, folder / "o.gguf", *tail], [m, r], folder / "o.gguf"

    return setup


def thread_recipe_check(folder):
    from qf.gguf_io import GGUFFile

    return "yes" if GGUFFile.open(folder / "o.gguf").get("general.file_type") == 2 else "no"


def rule_file(content: bytes):
    def setup(folder):
        m = model_file(folder)
        f = folder / "rules.txt"
        f.write_bytes(content)
        return ["--tensor-type-file", f, m, folder / "o.gguf", "Q8_0"], [m, f], folder / "o.gguf"

    return setup


def imatrix_case(values):
    def setup(folder):
        m = model_file(folder)
        v = {
            "zeros": np.zeros(256, np.float32),
            "negative": -np.ones(256, np.float32),
            "nan": np.full(256, np.nan, np.float32),
        }[values]
        im = write_imatrix_gguf(folder / "im.gguf", {"blk.0.attn_q.weight": v})
        return ["--imatrix", im, m, folder / "o.gguf", "Q4_0"], [m, im], folder / "o.gguf"

    return setup


def structure(infos, kvs=()):
    def setup(folder):
        m = raw_model(folder, infos, kvs)
        return [m, folder / "o.gguf", "Q8_0"], [m], folder / "o.gguf"

    return setup


def poisoned(folder):
    shapes = llama_tensors(**SMALL)
    last = [n for n in shapes if n.endswith(".weight") and len(shapes[n]) == 2][-1]
    m = write_model(folder / "m.gguf", shapes=shapes, poison={last: (7, np.inf)})
    return [m, folder / "o.gguf", "Q8_0"], [m], folder / "o.gguf"


def no_space(folder):
    m = model_file(folder)
    return [], [m], folder / "o.gguf"


NO_SPACE = """
import shutil, sys
real = shutil.disk_usage
shutil.disk_usage = lambda p: real(p)._replace(free=1 << 20)
from qf.app.cli import main
sys.argv = ["qf", "quantize", "-q", "{folder}/m.gguf", "{folder}/o.gguf", "Q8_0"]
main()
"""


def api(snippet: str) -> str:
    return (
        "import sys, numpy as np, qf\nfrom qf.errors import QfError\nx = np.ones((2, 64), np.float32)\ntry:\n"
        f"    {snippet}\nexcept QfError as e:\n    print('qf: error:', e, file=sys.stderr); sys.exit(e.exit_code)\n"
    )


def nothing(folder):
    return [], [], None


CASES = [
    # outputs that are not regular files
    Case("OUT is /dev/null (character device)", 0, to_device, check=kept("device")),
    Case("OUT is a FIFO", 0, to_fifo, check=kept("fifo")),
    Case("OUT is a symlink", 0, to_symlink, check=kept("symlink")),
    Case("OUT is a directory", 2, to_directory),
    Case("OUT's folder is missing", 2, plain(out="nope/o.gguf")),
    # outputs that are inputs
    Case("OUT = IN through a hardlink", 2, alias("hardlink")),
    Case("OUT = IN through a symlink", 2, alias("symlink")),
    Case("OUT = IN as ./name", 2, alias("dot-path")),
    Case("OUT = IN as sub/../name", 2, alias("dotdot")),
    Case("--keep-split OUT names an input split", 2, over_split),
    Case("OUT = the imatrix file", 2, over_side_file("imatrix")),
    Case("OUT = the recipe file", 2, over_side_file("recipe")),
    Case("OUT = the tensor-type file", 2, over_side_file("rules")),
    # the disk, signals
    Case("disk full mid-run (RLIMIT_FSIZE 64 KiB)", 1, plain(), preexec=fsize_limit),
    Case("not enough free space (checked up front)", 1, no_space, python=NO_SPACE),
    Case("SIGTERM mid-run", 143, big, signal_=signal.SIGTERM),
    Case("SIGHUP mid-run", 129, big, signal_=signal.SIGHUP),
    Case("SIGINT mid-run", 130, big, signal_=signal.SIGINT),
    # options
    Case(
        "--recipe with a trailing thread count",
        0,
        recipe_case('extends = "Q4_0"\n', "2"),
        output_allowed=True,
        check=thread_recipe_check,
    ),
    Case("recipe: match = 7", 2, recipe_case('extends = "Q4_0"\n[[rule]]\nmatch = 7\ntype = "q8_0"\n')),
    Case("recipe: rule = 5", 2, recipe_case('extends = "Q4_0"\nrule = 5\n')),
    Case("recipe: strategy = 3", 2, recipe_case('extends = "Q4_0"\nstrategy = 3\n')),
    Case("recipe not UTF-8", 2, recipe_case(b'extends = "\xff\xfe"\n')),
    Case("tensor-type file not UTF-8", 2, rule_file(b"attn_v=q8_0\n\xff\xfe=q4_0\n")),
    Case("--override-kv foo=float:1e39", 2, plain("Q8_0", "--override-kv", "foo=float:1e39")),
    Case("--override-kv foo=int:abc", 2, plain("Q8_0", "--override-kv", "foo=int:abc")),
    Case("--override-kv foo=int:99999999999", 2, plain("Q8_0", "--override-kv", "foo=int:99999999999")),
    Case("--threads 100000 (clamped, one warning)", 0, plain("Q8_0", "--threads", "100000"), output_allowed=True),
    # the imatrix
    Case("imatrix all zero for a tensor", 1, imatrix_case("zeros")),
    Case("imatrix with negative values", 1, imatrix_case("negative")),
    Case("imatrix with NaN values", 1, imatrix_case("nan")),
    # the model's structure
    Case("tensor dimension 0", 1, structure([("w", (0, 4), 0, 0)])),
    Case("dimensions whose product overflows int64", 1, structure([("w", (2**32, 2**32), 0, 0)])),
    Case(
        "array nested 5000 deep",
        1,
        structure([], [encode_string("deep") + struct.pack("<I", T.ARRAY) + deep_array(5000)]),
    ),
    Case("duplicate metadata key", 1, structure([], [make_kv("a", T.UINT32, 1).raw, make_kv("a", T.STRING, "x").raw])),
    Case("overlapping tensor data", 1, structure([("w", (32,), 0, 0), ("v", (8,), 0, 96)])),
    Case("Inf in the last tensor", 1, poisoned),
    # the Python API
    Case("API: type given as int", 2, nothing, python=api("qf.quantize_rows(7, x)")),
    Case("API: type None", 2, nothing, python=api("qf.quantize_rows(None, x)")),
    Case("API: quantize_rows of 1e30", 1, nothing, python=api("qf.quantize_rows('Q8_0', x * 1e30)")),
    Case(
        "API: dequantize_rows of float data",
        1,
        nothing,
        python=api("qf.dequantize_rows('Q8_0', np.zeros((1, 34), np.float32), 32)"),
    ),
    Case(
        "API: imatrix='abc'",
        1,
        nothing,
        python=api("qf.quantize_rows('Q4_K', np.ones((2, 256), np.float32), imatrix='abc')"),
    ),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only cases whose name contains this")
    args = parser.parse_args()
    rows = []
    print("| case | exit (expected) | one line | traceback | leftovers | inputs untouched | kept | message |")
    print("|---|---|---|---|---|---|---|---|")
    for case in CASES:
        if args.k not in case.name:
            continue
        with tempfile.TemporaryDirectory(prefix="qf-hostile-") as tmp:
            row = run_case(case, Path(tmp))
        rows.append(row)
        message = row["message"].replace("|", "\\|")[:110]
        print(
            f"| {row['case']} | {row['code']} ({row['expect']}) | {'yes' if row['lines'] <= 1 else 'no'} | "
            f"{'yes' if row['traceback'] else 'no'} | {', '.join(row['leftovers']) or 'none'} | "
            f"{'yes' if row['untouched'] else 'NO'} | {row['extra'] or '-'} | {message} |"
            + ("" if row["ok"] else " **FAIL**"),
            flush=True,
        )
    failed = [r["case"] for r in rows if not r["ok"]]
    print(f"\n{len(rows)} cases, {len(failed)} failing" + (f": {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
