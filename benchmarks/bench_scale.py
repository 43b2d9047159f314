"""Whole-model time on 1 and 2 threads: qf against llama-quantize on the same file, in the same run.

    python benchmarks/bench_scale.py [--input F32.gguf] [--llama-quantize PATH] [--ftypes Q4_0,Q8_0,...] [--repeat 3]

Per ftype: wall and user seconds of qf and llama-quantize at 1 and 2 threads (best of ``--repeat``), the serial
fraction s that Amdahl's law T(n) = T(1)·(s + (1 - s)/n) fits to the two, the wall time it predicts at 16, 64 and
128 threads, and qf's 2-thread wall time against the time to read the input once (``cat`` to /dev/null, warm page
cache): the physical floor.  Without ``--input`` the embedded SmolLM2 (``@smollm2``) is dequantized to F32 first.
IQ2_XXS runs with the golden-e2e imatrix of SmolLM2 (``--imatrix``).  llama-quantize is llama.cpp's own tool built
from the llama-cpp-python 0.3.36 sdist (``--llama-quantize``, or $LLAMA_QUANTIZE).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUPPORT = HERE.parent / "tests" / "support"
sys.path.insert(0, str(SUPPORT))

FTYPES = ("Q4_0", "Q8_0", "Q4_K_M", "Q6_K", "IQ4_XS", "IQ2_XXS")


#: qf runs as an installed package does: with its bytecode cached (a wheel install compiles it; a shell that sets
#: PYTHONDONTWRITEBYTECODE would make every run compile qf's modules again)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall, user+sys of the children) seconds of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def best(cmd: list[str], repeat: int) -> tuple[float, float]:
    runs = [timed(cmd) for _ in range(repeat)]
    return min(runs)


def serial_fraction(t1: float, t2: float) -> float:
    """Amdahl: t2 = t1·(s + (1 - s)/2)  =>  s = 2·t2/t1 − 1 (clamped to [0, 1])."""
    return min(1.0, max(0.0, 2 * t2 / t1 - 1))


def predict(t1: float, s: float, n: int) -> float:
    return t1 * (s + (1 - s) / n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input")
    parser.add_argument("--llama-quantize", default=os.environ.get("LLAMA_QUANTIZE",
                                                                   "/work/refs/llama-build/bin/llama-quantize"))
    parser.add_argument("--ftypes", default=",".join(FTYPES))
    parser.add_argument("--imatrix")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    qf_cmd = [sys.executable, "-m", "qf", "quantize", "-q"]
    with tempfile.TemporaryDirectory() as tmp:
        inp = args.input
        if inp is None:
            inp = f"{tmp}/smollm2-F32.gguf"
            subprocess.run([*qf_cmd, "--allow-requantize", "@smollm2", inp, "F32"], check=True)
        imatrix = args.imatrix
        if imatrix is None:
            from paths import GOLDEN_E2E

            found = sorted((GOLDEN_E2E / "smollm2" / "imatrix").glob("*.gguf"))
            imatrix = str(found[0]) if found else None
        floor = best(["cat", inp], args.repeat)[0] if Path("/usr/bin/cat").exists() else float("nan")
        size = Path(inp).stat().st_size / 2**20
        print(f"input {inp}: {size:.0f} MiB; read floor (cat, warm): {floor:.3f} s")
        print(f"{'ftype':8} {'tool':6} {'1 thr wall/user':>17} {'2 thr wall/user':>17} {'serial':>7}"
              f" {'16 thr':>7} {'64 thr':>7} {'128 thr':>8} {'qf/C':>5} {'/floor':>6}")
        for ftype in args.ftypes.split(","):
            extra = ["--imatrix", imatrix] if ftype.startswith("IQ2") and imatrix else []  # IQ2 types require one
            rows = {}
            for tool in ("C", "qf"):
                out = f"{tmp}/out-{tool}.gguf"
                times = {}
                if tool == "qf":  # warm numba's kernel cache (compiling is reported by the cold-start benchmark)
                    timed([*qf_cmd, *extra, inp, out, ftype, "2"])
                for n in (1, 2):
                    if tool == "qf":
                        cmd = [*qf_cmd, *extra, inp, out, ftype, str(n)]
                    else:
                        cmd = [args.llama_quantize, *extra, inp, out, ftype, str(n)]
                    times[n] = best(cmd, args.repeat)
                s = serial_fraction(times[1][0], times[2][0])
                rows[tool] = (times, s)
            for tool in ("C", "qf"):
                times, s = rows[tool]
                t1 = times[1][0]
                ratio = rows["qf"][0][2][0] / rows["C"][0][2][0]
                tail = f" {ratio:5.2f} {times[2][0] / floor:6.1f}" if tool == "qf" else ""
                print(f"{ftype:8} {tool:6} {times[1][0]:8.2f}/{times[1][1]:<8.2f} {times[2][0]:8.2f}/{times[2][1]:<8.2f}"
                      f" {s:7.2f} {predict(t1, s, 16):7.2f} {predict(t1, s, 64):7.2f} {predict(t1, s, 128):8.2f}{tail}")


if __name__ == "__main__":
    main()
