"""llama-imatrix's collection, in-process through llama-cpp-python (an eval callback on llama.cpp's own graph).

``reference_imatrix(model, tokens, n_ctx, n_chunks)`` decodes the chunks exactly as llama-imatrix's
``compute_imatrix`` does (``n_batch // n_ctx`` chunks per decode, KV cleared per group, every position an output) and
adds ``Σx²`` of every ``mul_mat`` / ``mul_mat_id`` input on a ``blk.*`` weight, in the callback's order, as its
collector does.  Used to check qf's forward passes against llama.cpp on any model (e2e tests), to look at
intermediate tensors (``capture``), and to time llama.cpp (benchmarks/bench_imatrix.py).
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable

import numpy as np

GGML_OP_MUL_MAT = 29
GGML_OP_MUL_MAT_ID = 30
GGML_TYPE_F32 = 0


class GGMLTensor(ctypes.Structure):
    pass


GGMLTensor._fields_ = [
    ("type", ctypes.c_int),
    ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * 4),
    ("nb", ctypes.c_size_t * 4),
    ("op", ctypes.c_int),
    ("op_params", ctypes.c_int32 * 16),
    ("flags", ctypes.c_int32),
    ("src", ctypes.POINTER(GGMLTensor) * 10),
    ("view_src", ctypes.POINTER(GGMLTensor)),
    ("view_offs", ctypes.c_size_t),
    ("data", ctypes.c_void_p),
    ("name", ctypes.c_char * 64),
    ("extra", ctypes.c_void_p),
    ("padding", ctypes.c_char * 8),
]


def _array(t: GGMLTensor) -> np.ndarray:
    """A float32 tensor's data as numpy (ggml order reversed: (ne3, ne2, ne1, ne0)), honouring strides."""
    ne = [int(t.ne[i]) for i in range(4)]
    nb = [int(t.nb[i]) for i in range(4)]
    size = sum((ne[i] - 1) * nb[i] for i in range(4)) + 4
    buf = (ctypes.c_char * size).from_address(t.data)
    base = np.frombuffer(buf, dtype=np.uint8)
    return np.lib.stride_tricks.as_strided(base.view(np.float32), shape=ne[::-1], strides=nb[::-1]).copy()


def _name(t: GGMLTensor) -> str:
    name = t.name.decode(errors="replace")
    if "#" in name:  # CUDA0#blk.0.attn_k.weight#0 -> blk.0.attn_k.weight
        name = name.split("#")[1]
    return name


def reference_imatrix(model_path: str, tokens: np.ndarray, n_ctx: int, n_chunks: int, n_batch: int = 2048,
                      n_threads: int = 2, capture: Callable[[str, np.ndarray], None] | None = None,
                      add_bos: bool = False, bos_id: int = 1) -> dict:
    """``{"sums": {name: (n, ne0)}, "counts": {name: (n,)}, "seconds": s, "logits": [per chunk (n_ctx, n_vocab)]}``.

    ``capture(name, array)`` sees every computed node whose name it asks for (return value of ``capture.wants``)."""
    import llama_cpp as L

    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    wants = getattr(capture, "wants", lambda name: False)

    def callback(t_ptr, ask, user_data):
        t = ctypes.cast(t_ptr, ctypes.POINTER(GGMLTensor)).contents
        if ask:
            if t.op == GGML_OP_MUL_MAT_ID:
                return True
            if wants(t.name.decode(errors="replace")):
                return True
            if t.op != GGML_OP_MUL_MAT:
                return False
            src1 = t.src[1].contents
            return src1.ne[1] >= 16 and src1.type == GGML_TYPE_F32 and _name(t.src[0].contents).startswith("blk.")
        if wants(t.name.decode(errors="replace")):
            capture(t.name.decode(errors="replace"), _array(t))
        if t.op not in (GGML_OP_MUL_MAT, GGML_OP_MUL_MAT_ID):
            return True
        src0, src1 = t.src[0].contents, t.src[1].contents
        name = _name(src0)
        if not name.startswith("blk."):
            return True
        x = _array(src1)  # (ne3, ne2, ne1, ne0)
        if t.op == GGML_OP_MUL_MAT_ID:
            ids = t.src[2].contents
            ne = [int(ids.ne[i]) for i in range(4)]
            raw = (ctypes.c_char * int(ids.nb[1] * ne[1])).from_address(ids.data)
            idv = np.lib.stride_tricks.as_strided(np.frombuffer(raw, np.int32), shape=(ne[1], ne[0]),
                                                  strides=(int(ids.nb[1]), int(ids.nb[0]))).copy()
            n_as = int(src0.ne[2])
            acc = sums.setdefault(name, np.zeros((n_as, x.shape[-1]), np.float32))
            cnt = counts.setdefault(name, np.zeros(n_as, np.int64))
            xs = x[0]  # (n_tokens, ne1, ne0)
            for slot in range(ne[0]):
                for row in range(ne[1]):
                    e = idv[row, slot]
                    v = xs[row, slot % xs.shape[1]]
                    acc[e] += v * v
                    cnt[e] += 1
        else:
            n_mat = int(src0.ne[2] * src0.ne[3])
            acc = sums.setdefault(name, np.zeros((n_mat, x.shape[-1]), np.float32))
            cnt = counts.setdefault(name, np.zeros(1, np.int64))
            for i3 in range(x.shape[0]):
                for i2 in range(x.shape[1]):
                    mat = (i3 % int(src0.ne[3])) * int(src0.ne[2]) + (i2 % int(src0.ne[2]))
                    for row in x[i3, i2]:
                        acc[mat] += row * row
            cnt[0] += x.shape[0] * x.shape[1] * x.shape[2] // n_mat
        return True

    cb = L.ggml_backend_sched_eval_callback(callback)
    L.llama_backend_init()
    mparams = L.llama_model_default_params()
    model = L.llama_model_load_from_file(model_path.encode(), mparams)
    if not model:
        raise RuntimeError(f"llama.cpp could not load {model_path}")
    n_seq = max(1, n_batch // n_ctx)
    cparams = L.llama_context_default_params()
    cparams.n_ctx = n_seq * n_ctx
    cparams.n_batch = min(n_batch, n_seq * n_ctx)
    cparams.n_ubatch = 512
    cparams.n_seq_max = n_seq
    cparams.n_threads = cparams.n_threads_batch = n_threads
    cparams.cb_eval = cb
    cparams.cb_eval_user_data = None
    ctx = L.llama_init_from_model(model, cparams)
    if not ctx:
        raise RuntimeError("llama.cpp could not create a context")
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    tokens = np.asarray(tokens, np.int32)
    batch = L.llama_batch_init(n_seq * n_ctx, 0, n_seq)
    all_logits = []
    t0 = time.perf_counter()
    try:
        for i in range(0, n_chunks, n_seq):
            n_seq_batch = min(n_seq, n_chunks - i)
            L.llama_memory_clear(L.llama_get_memory(ctx), True)
            n = 0
            for s in range(n_seq_batch):
                chunk = tokens[(i + s) * n_ctx:(i + s + 1) * n_ctx].copy()
                if add_bos:
                    chunk[0] = bos_id
                for k in range(n_ctx):
                    batch.token[n] = int(chunk[k])
                    batch.pos[n] = k
                    batch.n_seq_id[n] = 1
                    batch.seq_id[n][0] = s
                    batch.logits[n] = True
                    n += 1
            batch.n_tokens = n
            if L.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            for s in range(n_seq_batch):
                ptr = L.llama_get_logits_ith(ctx, s * n_ctx)
                all_logits.append(np.ctypeslib.as_array(ptr, shape=(n_ctx, n_vocab)).copy())
    finally:
        seconds = time.perf_counter() - t0
        L.llama_batch_free(batch)
        L.llama_free(ctx)
        L.llama_model_free(model)
    return {"sums": sums, "counts": counts, "seconds": seconds, "logits": all_logits}
