"""KL divergence of quantized GGUF models against a reference, computed by real llama.cpp (llama-cpp-python).

Run in a Python that has llama_cpp (it imports nothing of qf):

    python _kld_llama.py REQUEST.json   # {"reference": path, "models": [paths], "text": path, "ctx": 512,
                                        #  "chunks": 8, "threads": 2}

Like ``llama-perplexity --kl-divergence``: the text is tokenized, cut into chunks of ``ctx`` tokens (BOS first), and
the second half of each chunk is scored; prints one JSON line per model: mean KLD(reference || model), its standard
error, and the mean of the top-token agreement.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def logits(llama_cpp, path: str, chunks: list[list[int]], ctx: int, threads: int) -> list[np.ndarray]:
    llm = llama_cpp.Llama(model_path=path, n_ctx=ctx, n_batch=ctx, logits_all=True, n_threads=threads,
                          verbose=False)
    out = []
    for chunk in chunks:
        llm.reset()
        llm.eval(chunk)
        out.append(np.asarray(llm.scores[ctx // 2:ctx - 1], np.float32).copy())
    del llm
    return out


def main() -> None:
    import llama_cpp

    req = json.loads(open(sys.argv[1]).read())
    ctx, n_chunks, threads = req.get("ctx", 512), req.get("chunks", 8), req.get("threads", 2)
    vocab = llama_cpp.Llama(model_path=req["reference"], vocab_only=True, verbose=False)
    text = open(req["text"], encoding="utf-8").read()
    tokens = vocab.tokenize(text.encode("utf-8"), add_bos=False)
    bos = vocab.token_bos()
    chunks = []
    for c in range(n_chunks):
        chunk = list(tokens[c * ctx:(c + 1) * ctx])
        chunk[0] = bos
        chunks.append(chunk)
    ref = [log_softmax(x) for x in logits(llama_cpp, req["reference"], chunks, ctx, threads)]
    p_ref = [np.exp(r) for r in ref]
    for path in req["models"]:
        kl, same = [], []
        for r, p, x in zip(ref, p_ref, logits(llama_cpp, path, chunks, ctx, threads)):
            q = log_softmax(x)
            kl.append((p * (r - q)).sum(axis=-1))
            same.append(r.argmax(-1) == q.argmax(-1))
        kl = np.concatenate(kl)
        same = np.concatenate(same)
        print(json.dumps({"model": path, "kld": float(kl.mean()), "kld_se": float(kl.std(ddof=1) / np.sqrt(kl.size)),
                          "top1": float(same.mean()), "n": int(kl.size)}), flush=True)


if __name__ == "__main__":
    main()
