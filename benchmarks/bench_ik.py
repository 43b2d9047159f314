"""Single-thread speed of qf-ik's kernels (ik_llama.cpp's own quant types) against ik's C ``ggml_quantize_chunk``,
same process.

    QF_IK_LIB=/path/to/ik/libggml.so python benchmarks/bench_ik.py [--rows 64] [--cols 4096] [--repeat 3] [--types IQ4_K,...]

Input: a rows×cols float32 matrix of normal·0.02 values; the imatrix is lognormal.  MB/s counts float32 input
bytes.  After a warm-up call of each (which also compiles the numba kernels), qf and C are timed alternately
``--repeat`` times and the best of each is kept.  Without QF_IK_LIB only qf's speed is printed.  The C library is
ik's libggml (see plugins/qf-ik/REFERENCE.md for how it is built); ik itself runs single-threaded here.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "plugins", "qf-ik", "tests"))


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
    from qf_ik import codecs
    from qf_ik.types import implemented

    types = {name: type_id for name, type_id, _ in implemented()}
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--types", default=",".join(types))
    ap.add_argument("--no-imatrix", action="store_true", help="time only the runs without an imatrix")
    args = ap.parse_args()

    from ikc import IKC

    c = IKC.load()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((args.rows, args.cols)) * 0.02).astype(np.float32)
    imatrix = rng.lognormal(0.0, 1.0, args.cols).astype(np.float32)
    mb = x.nbytes / 1e6
    print(f"{'type':9} {'imatrix':7} {'qf MB/s':>9} {'C MB/s':>9} {'ratio':>7}  same bytes", flush=True)
    for name in args.types.split(","):
        codec = getattr(codecs, name)
        for im in (None,) if args.no_imatrix else (None, imatrix):
            def run_qf(im=im, codec=codec):
                return codec.quantize_native(x, im)

            def run_c(im=im, name=name):
                return c.quantize(types[name], x, im)

            ours = run_qf()
            if c is not None:
                t_qf, t_c = best_times([run_qf, run_c], args.repeat)
                same = np.array_equal(ours, run_c())
                c_mbs = f"{mb / t_c:9.2f}"
                ratio = f"{t_c / t_qf:7.2f}"
            else:
                (t_qf,) = best_times([run_qf], args.repeat)
                c_mbs, ratio, same = f"{'-':>9}", f"{'-':>7}", "-"
            print(f"{name:9} {'yes' if im is not None else 'no':7} {mb / t_qf:9.2f} {c_mbs} {ratio}  {same}", flush=True)


if __name__ == "__main__":
    main()
