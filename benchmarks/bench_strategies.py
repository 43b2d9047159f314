"""Search strategies against llama.cpp (``ggml``) and ik_llama.cpp: error on the golden inputs, and time.

    python benchmarks/bench_strategies.py [TYPE ...] [--strategies gradient,exhaustive] [--no-time] [--markdown]

Error: weighted relative RMSE sqrt(Σw(x−x̂)²/Σwx²), w = the case's imatrix (ones without), on every case of
../shared/golden/inputs.npz; ik_llama.cpp's and llama.cpp's figures come from ../shared/anchors/ik/wrmse.json
(qf's ``ggml`` strategy is byte-identical to llama.cpp, so its error is recomputed here as a check).
Time: single thread, 256×4096 normal·0.02 rows (lognormal imatrix), best of 3, per strategy relative to qf's ``ggml``
and, when llama-cpp-python is installed, to llama.cpp's own C quantizer (``ggml_quantize_chunk``) in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from bench_types import best_time  # noqa: E402

import qf  # noqa: E402
from cggml import CGGML  # noqa: E402

SHARED = Path(os.environ.get("QF_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS")


def wrmse(x: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> float:
    w = np.ones(x.shape[1]) if w is None else w.astype(np.float64)
    x = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        return float(np.sqrt((w * (x - y.astype(np.float64)) ** 2).sum() / (w * x * x).sum()))


def case_error(type_name: str, strategy: str, x: np.ndarray, imatrix: np.ndarray | None) -> float:
    data = qf.quantize_rows(type_name, x, imatrix, strategy)
    return wrmse(x, qf.dequantize_rows(type_name, data, x.shape[1]), imatrix)


def error_table(types, strategies, inputs, anchors):
    rows = []
    for name in types:
        for case, ref in anchors[name].items():
            x = inputs[f"{case}/x"]
            imatrix = inputs.get(f"{case}/imatrix")
            row = {"type": name, "case": case, "ggml": ref["ggml"], "ik": ref["ik"]}
            for s in strategies:
                row[s] = case_error(name, s, x, imatrix)
            rows.append(row)
    return rows


def time_table(types, strategies, rows=256, cols=4096):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((rows, cols)) * 0.02).astype(np.float32)
    imatrix = rng.lognormal(size=cols).astype(np.float32)
    c = CGGML.load()
    out = []
    for name in types:
        type_id = qf.get_registry().quant_type(name).type_id
        for im in (None, imatrix):
            t = {s: best_time(lambda s=s: qf.quantize_rows(name, x, im, s), 3) for s in ("ggml", *strategies)}
            t["C"] = best_time(lambda: c.quantize(type_id, x, im), 3) if c else float("nan")
            out.append({"type": name, "imatrix": im is not None, **t})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("types", nargs="*")
    parser.add_argument("--strategies", default="gradient,exhaustive")
    parser.add_argument("--no-time", action="store_true")
    parser.add_argument("--no-error", action="store_true")
    parser.add_argument("--cases", action="store_true", help="print every case, not only the per-type summary")
    args = parser.parse_args()
    types = args.types or TYPES
    strategies = [s for s in args.strategies.split(",") if s]
    if not args.no_error:
        inputs = dict(np.load(SHARED / "golden" / "inputs.npz"))
        anchors = json.loads((SHARED / "anchors" / "ik" / "wrmse.json").read_text())
        rows = error_table(types, strategies, inputs, anchors)
        cols = ["ggml", "ik", *strategies]
        print("| type | case | " + " | ".join(cols) + " |")
        print("|---" * (len(cols) + 2) + "|")
        for name in types:
            mine = [r for r in rows if r["type"] == name]
            for r in mine if args.cases else []:
                print(f"| {name} | {r['case']} | " + " | ".join(f"{r[c]:.5g}" for c in cols) + " |")
            finite = [r for r in mine if all(np.isfinite(r[c]) for c in cols)]
            mean = {c: np.mean([r[c] for r in finite]) for c in cols}
            worse_ik = {s: sum(r[s] > r["ik"] * (1 + 1e-9) + 1e-12 for r in finite) for s in strategies}
            worse_gg = {s: sum(r[s] > r["ggml"] * (1 + 1e-9) + 1e-12 for r in finite) for s in strategies}
            print(f"| {name} | mean of {len(finite)} | " + " | ".join(f"{mean[c]:.5g}" for c in cols)
                  + " | " + " ".join(f"{s}: >ik {worse_ik[s]}, >ggml {worse_gg[s]}" for s in strategies) + " |")
    if not args.no_time:
        print()
        print("| type | imatrix | C s | ggml s | " + " | ".join(f"{s} s | ×ggml | ×C" for s in strategies) + " |")
        print("|---" * (4 + 3 * len(strategies)) + "|")
        for r in time_table(types, strategies):
            print(f"| {r['type']} | {'yes' if r['imatrix'] else 'no'} | {r['C']:.4f} | {r['ggml']:.4f} | "
                  + " | ".join(f"{r[s]:.3f} | {r[s] / r['ggml']:.1f} | {r[s] / r['C']:.1f}" for s in strategies)
                  + " |")


if __name__ == "__main__":
    main()
