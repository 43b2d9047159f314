"""Writers for small imatrix files (legacy .dat and GGUF) used by the tests."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from gguf.constants import GGUFValueType as T

from qf.gguf_io import GGUFStreamWriter, OutTensor, make_kv


def write_dat(path: Path, entries: dict[str, np.ndarray], ncall: int = 1, chunks: int = 1,
              dataset: str = "test.txt") -> Path:
    parts = [struct.pack("<i", len(entries))]
    for name, values in entries.items():
        values = np.asarray(values, np.float32)
        raw = name.encode()
        parts.append(struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, values.size))
        parts.append((values * np.float32(ncall)).astype(np.float32).tobytes())
    parts.append(struct.pack("<ii", chunks, len(dataset)) + dataset.encode())
    path.write_bytes(b"".join(parts))
    return path


def write_imatrix_gguf(path: Path, entries: dict[str, np.ndarray], n_mat: dict[str, int] | None = None,
                       count: float = 4.0, metadata: bool = True) -> Path:
    n_mat = n_mat or {}
    kvs = [make_kv("general.type", T.STRING, "imatrix")]
    if metadata:
        kvs += [make_kv("imatrix.datasets", T.ARRAY, ["test.txt"], T.STRING),
                make_kv("imatrix.chunk_count", T.UINT32, 1), make_kv("imatrix.chunk_size", T.UINT32, 512)]
    tensors, blobs = [], []
    for name, values in sorted(entries.items()):
        values = np.asarray(values, np.float32)
        m = n_mat.get(name, 1)
        ne0 = values.size // m
        sums = (values * np.float32(count)).astype(np.float32)
        counts = np.full(m, count, np.float32)
        tensors += [OutTensor(f"{name}.in_sum2", (ne0, m) if m > 1 else (ne0,), 0, sums.nbytes),
                    OutTensor(f"{name}.counts", (1, m) if m > 1 else (1,), 0, counts.nbytes)]
        blobs += [sums, counts]
    with open(path, "wb") as fh:
        w = GGUFStreamWriter(fh, kvs, tensors)
        for t, b in zip(tensors, blobs):
            w.begin(t.name)
            w.write(b)
        w.close()
    return path
