"""Single-thread speed of qf's grid-type kernels (IQ1/IQ2/IQ3) against llama.cpp's C ``ggml_quantize_chunk``, same
process.

    QF_LIBGGML_BASE=.../libggml-base.so python benchmarks/bench_grid.py [--rows 256] [--cols 4096] [--repeat 3]

Input: a rows×cols float32 matrix of normal·0.02 values; the imatrix is lognormal.  MB/s counts float32 input
bytes.  Each timing is the best of ``--repeat`` runs (qf and C interleaved; thread CPU time, so that other processes
on the machine distort it less) after a warm-up call (which also compiles the numba kernels and builds the grids, on
both sides).  Types that need an imatrix are timed with one only.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "support"))

TYPES = {"IQ2_XXS": 16, "IQ2_XS": 17, "IQ2_S": 22, "IQ3_XXS": 18, "IQ3_S": 21, "IQ1_S": 19, "IQ1_M": 29}


def best_times(fns, repeat: int) -> list[float]:
    """Best wall time of each function, the runs interleaved so that a noisy machine hurts both sides alike."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.thread_time()
            fn()
            best[i] = min(best[i], time.thread_time() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--types", default=",".join(TYPES))
    args = ap.parse_args()

    from cggml import CGGML
    from qf.plugins import get_registry

    c = CGGML.load()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((args.rows, args.cols)) * 0.02).astype(np.float32)
    imatrix = rng.lognormal(0.0, 1.0, args.cols).astype(np.float32)
    mb = x.nbytes / 1e6
    registry = get_registry()
    print(f"{'type':8} {'imatrix':7} {'qf MB/s':>9} {'C MB/s':>9} {'ratio':>7}  same bytes")
    for name in args.types.split(","):
        qtype = registry.quant_type(name)
        codec = qtype.load_codec()
        for im in (imatrix,) if qtype.requires_imatrix else (None, imatrix):
            ours = codec.quantize_native(x, im)
            run_qf = functools.partial(codec.quantize_native, x, im)
            if c is not None:
                run_c = functools.partial(c.quantize, TYPES[name], x, im)
                t_qf, t_c = best_times([run_qf, run_c], args.repeat)
                same = np.array_equal(ours, run_c())
                c_mbs, ratio = f"{mb / t_c:9.1f}", f"{t_c / t_qf:7.2f}"
            else:
                (t_qf,) = best_times([run_qf], args.repeat)
                c_mbs, ratio, same = f"{'-':>9}", f"{'-':>7}", "-"
            label = "yes" if im is not None else "no"
            print(f"{name:8} {label:7} {mb / t_qf:9.1f} {c_mbs} {ratio}  {same}", flush=True)

if __name__ == "__main__":
    main()
