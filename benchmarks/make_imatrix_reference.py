"""Run llama-imatrix itself on a model and keep what the e2e tests compare with, as a small .npz.

    python benchmarks/make_imatrix_reference.py --model @gemma3 -c 256 --chunks 8 -b 2048 -t 2 \\
        --llama-imatrix /path/to/llama-imatrix -o tests/data/llama_imatrix_gemma3_270m.npz

Stores, per tensor, llama-imatrix's ``in_sum2`` (float32, as written) and counts, plus the settings, the PPL it
printed and its chunk count (``meta``, JSON).  The model itself is never stored.  llama-imatrix runs from the text's
folder with ``-f <file name>``, as the golden runs did.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from bench_imatrix_engines import f32_model, llama_imatrix_binary  # noqa: E402
from paths import DATA  # noqa: E402
from qf.gguf_io import GGUFFile  # noqa: E402
from qf.imatrix import Imatrix  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="@gemma3")
    ap.add_argument("-c", "--ctx-size", type=int, default=256)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("-b", "--batch-size", type=int, default=2048)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--text", default=str(DATA / "calib_austen_emma.txt"))
    ap.add_argument("--llama-imatrix")
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()
    binary = llama_imatrix_binary(args.llama_imatrix)
    if not binary:
        raise SystemExit("llama-imatrix not found (--llama-imatrix, $LLAMA_IMATRIX or PATH)")
    model = f32_model(args.model)
    text = Path(args.text).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "imatrix.gguf"
        argv = [binary, "-m", str(model), "-f", text.name, "-c", str(args.ctx_size), "--chunks", str(args.chunks),
                "-b", str(args.batch_size), "-t", str(args.threads), "-o", str(out)]
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=text.parent)
        log = proc.stdout + proc.stderr
        if proc.returncode != 0:
            raise SystemExit(f"llama-imatrix failed:\n{log[-3000:]}")
        im = Imatrix.load(out)
    ppl = float(re.search(r"Final estimate: PPL = ([\d.]+)", log).group(1))
    f = GGUFFile.open(model)
    meta = {"model": args.model, "arch": f.get("general.architecture"), "n_ctx": args.ctx_size,
            "chunks": args.chunks, "n_batch": args.batch_size, "threads": args.threads, "text": text.name,
            "ppl": ppl, "chunk_count": im.chunk_count, "chunk_size": im.chunk_size, "names": sorted(im.entries),
            "command": " ".join(["llama-imatrix", *argv[1:]]).replace(str(model), Path(model).name)}
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    for name, (sums, counts) in im.sums_and_counts().items():
        arrays[f"{name}/sums"] = np.asarray(sums, np.float32)
        arrays[f"{name}/counts"] = np.asarray(counts, np.int64)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.output, **arrays)
    print(f"wrote {args.output} ({os.path.getsize(args.output)} bytes): {len(im.entries)} tensors, PPL {ppl}")


if __name__ == "__main__":
    main()
