"""Whole-model time of qf's strategies against llama-quantize on the same file, with an imatrix, in the same run.

    python benchmarks/bench_strategy_model.py --input F32.gguf --imatrix IMATRIX [--threads 2] [--repeat 3]
        [--ftypes Q4_0,Q5_0,IQ4_NL,Q3_K,Q4_K_M] [--strategies ggml,gradient,exhaustive] [--llama-quantize PATH]

Q4_0, Q5_0, IQ4_NL and Q3_K run pure (``--pure``) with token_embd and output in Q8_0; Q4_K_M runs as its mix.
Per ftype: llama-quantize's wall time and each strategy's, with the ratio (best of ``--repeat``; qf with a warm
kernel cache and its bytecode cached).  ``ggml``'s file is checked byte for byte against llama-quantize's.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PURE = ("Q4_0", "Q5_0", "IQ4_NL", "Q3_K")
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    return time.perf_counter() - start


def sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True)
    parser.add_argument("--imatrix", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ftypes", default="Q4_0,Q5_0,IQ4_NL,Q3_K,Q4_K_M")
    parser.add_argument("--strategies", default="ggml,gradient,exhaustive")
    parser.add_argument("--llama-quantize", default=os.environ.get("LLAMA_QUANTIZE",
                                                                   "/work/refs/llama-build/bin/llama-quantize"))
    args = parser.parse_args()
    strategies = args.strategies.split(",")
    print(f"input {args.input} ({Path(args.input).stat().st_size / 2**20:.0f} MiB), imatrix {args.imatrix},"
          f" {args.threads} threads, best of {args.repeat}")
    print("| ftype | llama-quantize s | " + " | ".join(f"{s} s (ratio)" for s in strategies) + " | ggml same bytes |")
    print("|---|---:|" + "---:|" * len(strategies) + "---|")
    with tempfile.TemporaryDirectory() as tmp:
        for ftype in args.ftypes.split(","):
            options = ["--imatrix", args.imatrix]
            if ftype in PURE:
                options += ["--pure", "--token-embedding-type", "q8_0", "--output-tensor-type", "q8_0"]
            ref = Path(tmp) / "ref.gguf"
            t_ref = min(wall([args.llama_quantize, *options, args.input, str(ref), ftype, str(args.threads)])
                        for _ in range(args.repeat))
            cells, same = [], "-"
            for strategy in strategies:
                out = Path(tmp) / f"{strategy}.gguf"
                cmd = [sys.executable, "-m", "qf", "quantize", "-q", "--strategy", strategy, *options, args.input,
                       str(out), ftype, str(args.threads)]
                wall(cmd)  # warm numba's kernel cache
                t = min(wall(cmd) for _ in range(args.repeat))
                cells.append(f"{t:.2f} ({t / t_ref:.2f}x)")
                if strategy == "ggml":
                    same = "yes" if sha(out) == sha(ref) else "NO"
            print(f"| {ftype} | {t_ref:.2f} | " + " | ".join(cells) + f" | {same} |", flush=True)


if __name__ == "__main__":
    main()
