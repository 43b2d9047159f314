"""Writing importance matrices as llama-imatrix does.

GGUF with ``general.type = "imatrix"``, ``imatrix.datasets``, ``imatrix.chunk_count``, ``imatrix.chunk_size`` and, per
entry in name order, ``<name>.in_sum2`` F32 ``[ne0, n_mat]`` and ``<name>.counts`` F32 ``[1, n_mat]`` (trailing
dimensions of 1 dropped, as ggml does); legacy ``.dat`` with ``(sum / count) · ncall`` per value,
``ncall = ceil(max count / chunk_size)``, entries without any data skipped.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
from gguf.constants import GGUFValueType as T

from qf.errors import ImatrixError
from qf.gguf_io import GGUFStreamWriter, OutTensor, atomic_output, make_kv
from qf.imatrix import DEFAULT_CHUNK_SIZE, Imatrix


def save(imatrix: Imatrix, path: str | os.PathLike[str], output_format: str = "gguf") -> Path:
    """Write the imatrix as llama-imatrix would (``gguf`` or legacy ``dat``), atomically."""
    if output_format == "gguf":
        return save_gguf(imatrix, path)
    if output_format == "dat":
        return save_dat(imatrix, path)
    raise ImatrixError(f"unknown imatrix output format {output_format!r} (gguf or dat)")


def save_gguf(imatrix: Imatrix, path: str | os.PathLike[str]) -> Path:
    """llama-imatrix's GGUF format."""
    kvs = [make_kv("general.type", T.STRING, "imatrix"),
           make_kv("imatrix.datasets", T.ARRAY, list(imatrix.datasets), T.STRING),
           make_kv("imatrix.chunk_count", T.UINT32, int(imatrix.chunk_count)),
           make_kv("imatrix.chunk_size", T.UINT32, int(imatrix.chunk_size))]
    tensors, blobs = [], []
    for name, (sums, counts) in sorted(imatrix.sums_and_counts().items()):
        n_mat, ne0 = sums.shape
        data = np.ascontiguousarray(sums, np.float32)
        cnt = counts.astype(np.float32)
        tensors += [OutTensor(f"{name}.in_sum2", (ne0, n_mat) if n_mat > 1 else (ne0,), 0, data.nbytes),
                    OutTensor(f"{name}.counts", (1, n_mat) if n_mat > 1 else (1,), 0, cnt.nbytes)]
        blobs += [data, cnt]
    path = Path(path)
    with atomic_output(path) as fh:
        writer = GGUFStreamWriter(fh, kvs, tensors)
        for t, blob in zip(tensors, blobs):
            writer.begin(t.name)
            writer.write(blob)
        writer.close()
    return path


def save_dat(imatrix: Imatrix, path: str | os.PathLike[str]) -> Path:
    """The legacy ``.dat`` format."""
    chunk_size = imatrix.chunk_size or DEFAULT_CHUNK_SIZE
    parts = []
    for name, (sums, counts) in sorted(imatrix.sums_and_counts().items()):
        if not counts.any():  # llama-imatrix skips entries without any data
            continue
        ncall = (int(counts.max()) + chunk_size - 1) // chunk_size
        cnt = counts.astype(np.float32)[:, None]
        values = np.where(cnt == 0, np.float32(1), sums)
        cnt = np.where(cnt == 0, np.float32(1), cnt)
        stored = ((values / cnt) * np.float32(ncall)).astype(np.float32).reshape(-1)
        raw = name.encode()
        parts.append(struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, stored.size) + stored.tobytes())
    dataset = (imatrix.datasets[-1] if imatrix.datasets else "").encode()
    blob = (struct.pack("<i", len(parts)) + b"".join(parts)
            + struct.pack("<ii", int(imatrix.chunk_count), len(dataset)) + dataset)
    path = Path(path)
    with atomic_output(path) as fh:
        fh.write(blob)
    return path
