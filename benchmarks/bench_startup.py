"""Start-up: ``qf quantize`` on a tiny model, cold (an empty kernel cache: numba compiles what the plan needs) and warm.

    python benchmarks/bench_startup.py [--ftypes Q4_0,Q8_0,...] [--repeat 3]

Per ftype: the wall time of the first run with a fresh ``NUMBA_CACHE_DIR`` (what a user waits for after installing,
once per ftype family), how many kernels it compiled (index files numba wrote), and the best warm run.  Then the fixed
parts of any run, for scale: the interpreter alone, ``import numpy``, ``import numba``.  The tiny model is a 2-layer
llama (n_embd 256; IQ2 types with a random imatrix), so the warm time is almost all fixed cost.  qf runs with its bytecode cached, as installed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "support"))

FTYPES = ("Q4_0", "Q8_0", "Q4_K_M", "Q6_K", "IQ4_XS", "IQ2_XXS")
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ftypes", default=",".join(FTYPES))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from imatrix_files import write_imatrix_gguf
    from model_factory import llama_tensors, write_model

    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shapes = llama_tensors(n_embd=256, n_ff=512, n_vocab=256)
        model = write_model(tmp / "tiny.gguf", shapes=shapes)
        rng = np.random.default_rng(0)
        imatrix = write_imatrix_gguf(tmp / "imatrix.gguf", {name: rng.uniform(0.1, 2.0, shape[0]).astype(np.float32)
                                                            for name, shape in shapes.items() if len(shape) > 1})
        out = tmp / "out.gguf"
        print(f"{'ftype':8} {'cold s':>7} {'kernels compiled':>16} {'warm s (best of ' + str(args.repeat) + ')':>20}")
        for ftype in args.ftypes.split(","):
            cache = tmp / f"numba-{ftype}"
            env = {**ENV, "NUMBA_CACHE_DIR": str(cache)}
            extra = ["--imatrix", str(imatrix)] if ftype.startswith("IQ2") else []  # IQ2 types require one
            cmd = [py, "-m", "qf", "quantize", "-q", *extra, str(model), str(out), ftype]
            cold = wall(cmd, env)
            compiled = len(list(cache.rglob("*.nbi")))
            warm = min(wall(cmd, env) for _ in range(args.repeat))
            print(f"{ftype:8} {cold:7.2f} {compiled:16d} {warm:20.3f}")
        parts = {"python -c pass": [py, "-c", "pass"],
                 "import numpy": [py, "-c", "import numpy"],
                 "import numba": [py, "-c", "import numba"],
                 "qf --help": [py, "-m", "qf", "--help"]}
        for label, cmd in parts.items():
            print(f"{label:16} {min(wall(cmd, ENV) for _ in range(args.repeat)):.3f} s")


if __name__ == "__main__":
    main()
