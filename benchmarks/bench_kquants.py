"""Single-thread speed of qf's K-quant kernels against llama.cpp's C ``ggml_quantize_chunk``, same process.

    QF_LIBGGML_BASE=.../libggml-base.so python benchmarks/bench_kquants.py [--rows 256] [--cols 4096] [--repeat 5]

Input: a rows×cols float32 matrix of normal·0.02 values; the imatrix is lognormal.  MB/s counts float32 input
bytes.  After a warm-up call of each (which also compiles the numba kernels), qf and C are timed alternately
``--repeat`` times and the best of each is kept, so that load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "support"))

TYPES = {"Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14}


def best_times(fns, repeat: int) -> list[float]:
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=9)
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
    print(f"{'type':6} {'imatrix':7} {'qf MB/s':>9} {'C MB/s':>9} {'ratio':>7}  same bytes")
    for name in args.types.split(","):
        codec = registry.quant_type(name).load_codec()
        for im in (None, imatrix):
            def run_qf(im=im, codec=codec):
                return codec.quantize_native(x, im)

            def run_c(im=im, name=name):
                return c.quantize(TYPES[name], x, im)

            ours = run_qf()
            if c is not None:
                t_qf, t_c = best_times([run_qf, run_c], args.repeat)
                same = np.array_equal(ours, run_c())
                c_mbs = f"{mb / t_c:9.1f}"
                ratio = f"{t_c / t_qf:7.2f}"
            else:
                (t_qf,) = best_times([run_qf], args.repeat)
                c_mbs, ratio, same = f"{'-':>9}", f"{'-':>7}", "-"
            print(f"{name:6} {'yes' if im is not None else 'no':7} {mb / t_qf:9.1f} {c_mbs} {ratio}  {same}")


if __name__ == "__main__":
    main()
