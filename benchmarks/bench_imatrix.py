"""qf imatrix speed on SmolLM2 (tokens per second) against llama-imatrix.

    python benchmarks/bench_imatrix.py [--chunks 8] [--llama-cpp]

llama-imatrix's figure comes from the golden run's log (``-c 512 --chunks 40 -t 2``, same machine kind, 2 cores):
20480 tokens in the ``real`` time it reports.  ``--llama-cpp`` also times llama.cpp in-process
(llama_imatrix_ref.py, same batches, an eval callback summing in Python, so a lower bound for llama.cpp).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from paths import DATA, GOLDEN_E2E  # noqa: E402
from qf.app.aliases import find_model  # noqa: E402
from qf.gguf_io.source import TensorSource  # noqa: E402
from qf_arches.imatrix.collect import CollectOptions, ModelWeights, collect  # noqa: E402
from qf_arches.imatrix.tokenize import tokenize_text  # noqa: E402


def golden_llama_imatrix_speed() -> float | None:
    log = GOLDEN_E2E / "smollm2" / "imatrix" / "imatrix_gguf.log"
    if not log.exists():
        return None
    m = re.search(r"real\s+(\d+)m([\d.]+)s", log.read_text())
    return 40 * 512 / (int(m.group(1)) * 60 + float(m.group(2))) if m else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--llama-cpp", action="store_true")
    args = ap.parse_args()
    model = ModelWeights(TensorSource.open(find_model("@smollm2")))
    tokens = tokenize_text(model.metadata, (DATA / "calib_austen_emma.txt").read_text(encoding="utf-8"))
    collect(model, tokens, CollectOptions(n_ctx=512, n_chunks=4))  # compile the kernels once
    t0 = time.perf_counter()
    result = collect(model, tokens, CollectOptions(n_ctx=512, n_chunks=args.chunks))
    qf_speed = result.n_tokens / (time.perf_counter() - t0)
    print(f"qf imatrix:    {qf_speed:7.1f} tokens/s ({args.chunks} chunks of 512, PPL {result.ppl.value:.4f})")
    ref = golden_llama_imatrix_speed()
    if ref:
        print(f"llama-imatrix: {ref:7.1f} tokens/s (golden log, 40 chunks, wall time)  ratio qf/llama.cpp = "
              f"{qf_speed / ref:.2f}")
    if args.llama_cpp:
        import llama_imatrix_ref

        out = llama_imatrix_ref.reference_imatrix(str(find_model("@smollm2")), np.asarray(tokens), 512, args.chunks)
        speed = args.chunks * 512 / out["seconds"]
        print(f"llama.cpp in-process (Python callback): {speed:7.1f} tokens/s  ratio = {qf_speed / speed:.2f}")


if __name__ == "__main__":
    main()
