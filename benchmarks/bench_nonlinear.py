"""Single-thread speed of qf's non-linear / low-bit kernels against llama.cpp's ``ggml_quantize_chunk``.

    QF_LIBGGML_BASE=.../libggml-base.so python benchmarks/bench_nonlinear.py [TYPE ...] [--repeat N]

Input: a 256×4096 float32 matrix of normal·0.02 values and a lognormal imatrix, as in every qf benchmark.  Prints
MB/s of float32 input for qf (ggml strategy) and C, their ratio, and whether the bytes agree.  Types that ignore the
imatrix are measured once ("plain").
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "support"))

import qf  # noqa: E402
from cggml import CGGML  # noqa: E402
from qf.plugins import get_registry  # noqa: E402

TYPES = ("IQ4_NL", "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4", "NVFP4", "Q1_0", "Q2_0")


def best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("types", nargs="*", default=list(TYPES))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    c = CGGML.load()
    if c is None:
        sys.exit("libggml-base not found: set QF_LIBGGML_BASE or install llama-cpp-python")
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((256, 4096)) * 0.02).astype(np.float32)
    imatrix = rng.lognormal(0.0, 1.0, 4096).astype(np.float32)
    mb = x.nbytes / 1e6
    registry = get_registry()

    print(f"{'type':8} {'mode':8} {'qf MB/s':>10} {'C MB/s':>10} {'ratio':>7}  bytes")
    for name in args.types:
        qtype = registry.quant_type(name)
        modes = [("plain", None)] + ([("imatrix", imatrix)] if qtype.uses_imatrix else [])
        for mode, im in modes:
            ours = qf.quantize_rows(name, x, im)  # compile / warm up
            theirs = c.quantize(qtype.type_id, x, im)
            t_qf = best_time(lambda: qf.quantize_rows(name, x, im), args.repeat)  # noqa: B023
            t_c = best_time(lambda: c.quantize(qtype.type_id, x, im), args.repeat)  # noqa: B023
            same = "same" if np.array_equal(ours, theirs) else "DIFFER"
            print(f"{name:8} {mode:8} {mb / t_qf:10.1f} {mb / t_c:10.1f} {t_c / t_qf:7.2f}  {same}", flush=True)


if __name__ == "__main__":
    main()
