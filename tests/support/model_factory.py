"""Small synthetic GGUF models for tests, written with qf's own writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf.constants import GGUFValueType as T

from qf.gguf_io import GGUFStreamWriter, OutTensor, make_kv
from qf.testing import kernel_bytes

TYPE_IDS = {"F32": 0, "F16": 1, "BF16": 30}


def llama_tensors(n_layer: int = 2, n_embd: int = 64, n_ff: int = 128, n_vocab: int = 96, n_kv: int = 32):
    shapes = {"token_embd.weight": (n_embd, n_vocab), "output_norm.weight": (n_embd,)}
    for i in range(n_layer):
        p = f"blk.{i}."
        shapes |= {
            p + "attn_norm.weight": (n_embd,), p + "attn_q.weight": (n_embd, n_embd),
            p + "attn_k.weight": (n_embd, n_kv), p + "attn_v.weight": (n_embd, n_kv),
            p + "attn_output.weight": (n_embd, n_embd), p + "ffn_norm.weight": (n_embd,),
            p + "ffn_gate.weight": (n_embd, n_ff), p + "ffn_up.weight": (n_embd, n_ff),
            p + "ffn_down.weight": (n_ff, n_embd),
        }
    return shapes


def encode(values: np.ndarray, dtype: str) -> np.ndarray:

    values = np.ascontiguousarray(values, np.float32)
    if dtype == "F32":
        return values.view(np.uint8).reshape(-1)
    if dtype == "F16":  # plain numpy, no validation: lets tests plant NaN/Inf in half-precision inputs
        with np.errstate(over="ignore"):
            return values.astype(np.float16).view(np.uint8).reshape(-1)
    if dtype == "BF16":
        return (values.view(np.uint32) >> np.uint32(16)).astype(np.uint16).view(np.uint8).reshape(-1)
    return kernel_bytes(dtype, values.reshape(-1, values.shape[-1])).reshape(-1)


def write_model(path: Path, dtype: str = "F32", seed: int = 0, shapes: dict | None = None,
                arch: str = "llama", extra_kvs: tuple = (), poison: dict | None = None) -> Path:
    """A llama-like model: 1-D norms stay F32, matrices are stored as ``dtype`` (F32, F16, BF16, Q8_0, Q4_1 ...).

    ``poison`` maps tensor name -> (flat index, value) to plant NaN/Inf."""
    from qf.plugins import get_registry

    rng = np.random.default_rng(seed)
    shapes = shapes or llama_tensors()
    kvs = [make_kv("general.architecture", T.STRING, arch), make_kv("general.name", T.STRING, "qf-test"),
           make_kv(f"{arch}.block_count", T.UINT32, sum(1 for n in shapes if n.endswith("attn_q.weight"))),
           make_kv("general.file_type", T.UINT32, 0)]
    given = {kv.key for kv in extra_kvs}  # an extra KV replaces a default one (GGUF keys are unique)
    kvs = [kv for kv in kvs if kv.key not in given] + list(extra_kvs)
    tensors, blobs = [], []
    for name, shape in shapes.items():
        ggml_shape = tuple(shape)
        values = (rng.standard_normal(ggml_shape[::-1]) * 0.02).astype(np.float32)
        if poison and name in poison:
            index, value = poison[name]
            values.reshape(-1)[index] = value
        t = "F32" if len(shape) == 1 else dtype
        blob = encode(values, t)
        tensors.append(OutTensor(name, ggml_shape, get_registry().quant_type(t).type_id, blob.size))
        blobs.append(blob)
    with open(path, "wb") as fh:
        writer = GGUFStreamWriter(fh, kvs, tensors)
        for t, blob in zip(tensors, blobs):
            writer.begin(t.name)
            writer.write(blob)
        writer.close()
    return path


def write_split_model(prefix: Path, n_split: int = 2, **model_options) -> Path:
    """A model written as ``PREFIX-0000N-of-0000M.gguf`` splits, as gguf-split lays them out (metadata in the first,
    ``split.*`` keys in all, tensors dealt out in order); returns the first split's path."""
    from qf.gguf_io import GGUFFile

    whole = write_model(Path(f"{prefix}-whole.gguf"), **model_options)
    f = GGUFFile.open(whole)
    names = [t.name for t in f.tensors]
    per = -(-len(names) // n_split)
    paths = []
    for i in range(n_split):
        chunk = f.tensors[i * per:(i + 1) * per]
        split = [make_kv("split.no", T.UINT16, i), make_kv("split.count", T.UINT16, n_split),
                 make_kv("split.tensors.count", T.INT32, len(names))]
        kvs = (list(f.kvs) if i == 0 else []) + split
        path = Path(f"{prefix}-{i + 1:05d}-of-{n_split:05d}.gguf")
        with open(path, "wb") as fh:
            writer = GGUFStreamWriter(fh, kvs, [OutTensor(t.name, t.shape, t.type_id, t.n_bytes) for t in chunk])
            for t in chunk:
                writer.begin(t.name)
                writer.write(f.tensor_data(t))
            writer.close()
        paths.append(path)
    whole.unlink()
    return paths[0]
