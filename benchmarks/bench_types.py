"""Single-thread quantization speed per type: qf vs llama.cpp's C ``ggml_quantize_chunk``, same data, same run.

    python benchmarks/bench_types.py [TYPE ...] [--rows 256] [--cols 4096] [--repeat 3] [--markdown]

MB/s of float32 input (normal·0.02 data, lognormal imatrix), best of ``--repeat``; ratio = qf / C (> 1: qf faster).
The C library is the libggml-base.so that ``pip install llama-cpp-python==0.3.36`` builds ($QF_LIBGGML_BASE overrides).
qf is measured through the public ``qf.quantize_rows`` (input validation included). Numba threads are pinned to 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "support"))

import numpy as np  # noqa: E402

import qf  # noqa: E402
from cggml import CGGML  # noqa: E402
from qf.plugins import get_registry  # noqa: E402


def best_time(fn, repeat: int) -> float:
    fn()  # warm up (compilation, grid init)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("types", nargs="*")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--cols", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--strategy", default="ggml")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    c = CGGML.load()
    if c is None:
        sys.exit("llama-cpp-python (libggml-base.so) not found: pip install llama-cpp-python==0.3.36")
    registry = get_registry()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((args.rows, args.cols)) * 0.02).astype(np.float32)
    imatrix = rng.lognormal(size=args.cols).astype(np.float32)
    names = args.types or [q.name for q in sorted(registry.quant_types.values(), key=lambda q: q.type_id)
                           if q.type_id < 43 and q.name != "F32"]
    rows = []
    for name in names:
        qtype = registry.quant_type(name)
        for im in (None, imatrix):
            if im is None and qtype.requires_imatrix:
                continue
            if im is not None and not qtype.uses_imatrix:
                continue
            if args.strategy != "ggml" and not registry.strategy(args.strategy).supports(qtype):
                continue
            ours = qf.quantize_rows(name, x, im, args.strategy)
            theirs = c.quantize(qtype.type_id, x, im)
            same = "yes" if np.array_equal(ours, theirs) else "NO"
            t_qf = best_time(lambda im=im, name=name: qf.quantize_rows(name, x, im, args.strategy), args.repeat)
            t_c = best_time(lambda im=im, qtype=qtype: c.quantize(qtype.type_id, x, im), args.repeat)
            mb = x.nbytes / 1e6
            rows.append((name, "imatrix" if im is not None else "plain", mb / t_qf, mb / t_c, t_c / t_qf, same))
            line = rows[-1]
            if not args.markdown:
                print(f"{line[0]:8s} {line[1]:8s} qf {line[2]:9.1f} MB/s   C {line[3]:9.1f} MB/s   "
                      f"ratio {line[4]:5.2f}   same bytes: {line[5]}", flush=True)
    if args.markdown:
        print("| type | input | qf MB/s | C MB/s | qf/C | same bytes |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]:.1f} | {r[3]:.1f} | {r[4]:.2f} | {r[5]} |")


if __name__ == "__main__":
    main()
