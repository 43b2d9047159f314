"""Streaming GGUF writing in llama-quantize's layout.

The header (KVs and tensor infos) is written first — every tensor's type and size is known from the plan — and
then each tensor's data, in order, padded with zeros to the alignment, exactly as llama.cpp's gguf writer lays a
file out.  Output goes to a temporary file in the destination directory, renamed into place only on success.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

import attrs
import numpy as np

from qf.gguf_io.constants import GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC
from qf.gguf_io.kv import KV, encode_string

GGUF_VERSION = 3


@attrs.frozen
class OutTensor:
    name: str
    shape: tuple[int, ...]
    type_id: int
    n_bytes: int


def pad(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def header_bytes(kvs: list[KV], tensors: list[OutTensor], alignment: int = GGUF_DEFAULT_ALIGNMENT) -> bytes:
    """Header, KVs and tensor infos, padded to the alignment: what precedes the tensor data."""
    parts = [struct.pack("<IIQQ", GGUF_MAGIC, GGUF_VERSION, len(tensors), len(kvs))]
    parts.extend(kv.raw for kv in kvs)
    offset = 0
    for t in tensors:
        parts.append(encode_string(t.name))
        parts.append(struct.pack("<I", len(t.shape)))
        parts.append(struct.pack(f"<{len(t.shape)}Q", *t.shape))
        parts.append(struct.pack("<IQ", t.type_id, offset))
        offset += pad(t.n_bytes, alignment)
    head = b"".join(parts)
    return head + bytes(pad(len(head), alignment) - len(head))


class GGUFStreamWriter:
    """Writes the header at once, then tensor data in the declared order (``write`` may be called per chunk)."""

    def __init__(self, fh: BinaryIO, kvs: list[KV], tensors: list[OutTensor], alignment: int = GGUF_DEFAULT_ALIGNMENT):
        self.fh = fh
        self.tensors = tensors
        self.alignment = alignment
        fh.write(header_bytes(kvs, tensors, alignment))
        self._index = -1
        self._written = 0

    def begin(self, name: str) -> None:
        self._finish_current()
        self._index += 1
        expected = self.tensors[self._index].name
        if name != expected:
            raise RuntimeError(f"writer: expected tensor {expected!r} next, got {name!r}")
        self._written = 0

    def write(self, data: np.ndarray | bytes) -> None:
        buf = memoryview(np.ascontiguousarray(data)).cast("B") if isinstance(data, np.ndarray) else data
        self.fh.write(buf)
        self._written += len(buf)

    def _finish_current(self) -> None:
        if self._index < 0:
            return
        t = self.tensors[self._index]
        if self._written != t.n_bytes:
            raise RuntimeError(f"writer: tensor {t.name!r} got {self._written} bytes, expected {t.n_bytes}")
        self.fh.write(bytes(pad(t.n_bytes, self.alignment) - t.n_bytes))

    def close(self) -> None:
        self._finish_current()
        if self._index != len(self.tensors) - 1:
            raise RuntimeError(f"writer: {len(self.tensors) - 1 - self._index} tensors were never written")
