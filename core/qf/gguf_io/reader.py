"""Memory-mapped GGUF reading.

We parse the header ourselves (with the gguf package's constants) rather than through ``gguf.GGUFReader``: its
reader takes seconds on a 50k-token vocabulary and rejects ggml type ids it does not know, while qf must read types
that plugins add.  Tensor data is never read eagerly: :meth:`GGUFFile.tensor_data` returns a view of the memory map.
Every KV keeps its exact on-disk bytes, so copying metadata to the output reproduces it byte for byte.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from qf.errors import GGUFFormatError
from qf.gguf_io.constants import (
    GGML_QUANT_SIZES,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGMLQuantizationType,
    GGUFValueType,
)
from qf.gguf_io.kv import KV, NUMPY, SCALAR, StringArray

MAX_DIMS = 4
#: arrays of arrays deeper than this are refused (llama.cpp reads no nested arrays at all)
MAX_NESTING = 8
INT64_MAX = (1 << 63) - 1
#: names and values quoted in error messages are cut to this many characters (a corrupt length makes them huge)
SHOWN_CHARS = 80


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, cut to about :data:`SHOWN_CHARS` characters."""
    if isinstance(value, (str, bytes)) and len(value) > SHOWN_CHARS:
        return f"{value[:SHOWN_CHARS - 20]!r}...({len(value)} characters)"
    if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, (str, bytes)) and len(value) > 8:
        return f"{type(value).__name__} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 3] + "..."


@attrs.frozen
class TensorInfo:
    name: str
    type_id: int
    shape: tuple[int, ...]  # ggml order: shape[0] = ne0 = elements per row
    offset: int  # absolute file offset of the data
    n_bytes: int
    file_index: int = 0  # split number for multi-file models

    @property
    def n_per_row(self) -> int:
        return self.shape[0]

    @property
    def n_rows(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) if len(self.shape) > 1 else 1

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def n_dims(self) -> int:
        """ggml_n_dims: trailing dimensions of size 1 do not count."""
        dims = len(self.shape)
        while dims > 1 and self.shape[dims - 1] == 1:
            dims -= 1
        return dims


#: string arrays of at least this many items are decoded when first used (:class:`StringArray`)
LAZY_STRINGS = 1024
_U64 = struct.Struct("<Q")


def _skip_strings(mv: memoryview, pos: int, count: int, length=_U64.unpack_from) -> int | None:
    """The offset after ``count`` length-prefixed strings from ``pos``: past the end of ``mv`` if one runs over, None
    if a length itself cannot be read.  (The tight loop walks a 262k-item vocabulary in 30 ms.)"""
    try:
        for _ in range(count):
            (n,) = length(mv, pos)
            pos += 8 + n
    except struct.error:
        return None
    return pos


class _Cursor:
    def __init__(self, path: Path, buf: np.ndarray) -> None:
        self.path = path
        self.buf = buf
        self.mv = memoryview(buf)
        self.pos = 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise GGUFFormatError(
                f"{self.path}: truncated or corrupt GGUF header: reading {what} at byte {self.pos} needs {n} bytes,"
                f" file has {len(self.buf)}"
            )

    def scalar(self, fmt: str, what: str) -> Any:
        size = struct.calcsize(fmt)
        self.need(size, what)
        (value,) = struct.unpack_from(fmt, self.mv, self.pos)
        self.pos += size
        return value

    def string(self, what: str) -> str:
        n = self.scalar("<Q", what)
        self.need(n, what)
        raw = bytes(self.mv[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("utf-8", errors="surrogateescape")

    def strings(self, count: int, what: str) -> list[str] | StringArray:
        """A string array.  A long one (a vocabulary, a merge list: 50k–260k items) is only walked here, which checks
        every length against the file, and decoded when first used (:class:`StringArray`): quantizing copies its
        bytes and never reads it, and decoding a 262k-token vocabulary costs 0.5 s."""
        self.need(count * 8, what)  # every item has at least its 8-byte length
        mv, start, end = self.mv, self.pos, len(self.buf)
        if count < LAZY_STRINGS:
            return [self.string(what) for _ in range(count)]
        pos = _skip_strings(mv, start, count)
        if pos is None or pos > end:  # an item runs past the end: walk again, checking each, for the message
            length = _U64.unpack_from
            pos = start
            for _ in range(count):
                if pos + 8 > end:
                    self.pos = pos
                    self.need(8, what)
                n = length(mv, pos)[0]
                pos += 8
                if pos + n > end:
                    self.pos = pos
                    self.need(n, what)
                pos += n
        self.pos = pos
        return StringArray(bytes(mv[start:pos]), count)

    def value(self, vtype: int, what: str, depth: int = 0) -> tuple[Any, int | None]:
        if vtype == GGUFValueType.STRING:
            return self.string(what), None
        if vtype in SCALAR:
            return self.scalar(SCALAR[vtype], what), None
        if vtype == GGUFValueType.ARRAY:
            item_type = self.scalar("<I", what)
            count = self.scalar("<Q", what)
            if item_type in NUMPY:
                dtype = NUMPY[item_type]
                self.need(count * dtype.itemsize, what)
                arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos).copy()
                self.pos += count * dtype.itemsize
                return arr, item_type
            if item_type == GGUFValueType.STRING:
                return self.strings(count, what), item_type
            if item_type == GGUFValueType.ARRAY:
                if depth >= MAX_NESTING:
                    raise GGUFFormatError(f"{self.path}: {what} nests arrays deeper than {MAX_NESTING} levels")
                self.need(count * 12, what)  # every inner array has at least its item type and count
                return [self.value(GGUFValueType.ARRAY, what, depth + 1)[0] for _ in range(count)], item_type
            raise GGUFFormatError(f"{self.path}: {what} has unknown array item type {item_type}")
        raise GGUFFormatError(f"{self.path}: {what} has unknown value type {vtype}")


#: ``type_id -> (block size, bytes per block)`` (and, for types with a per-row header, its bytes), or None for a type
#: the caller does not know
SizeLookup = Callable[[int], "tuple[int, ...] | None"]


def gguf_sizes(type_id: int) -> tuple[int, int] | None:
    """gguf-py's table of llama.cpp's types (the default :data:`SizeLookup`)."""
    try:
        return GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
    except (ValueError, KeyError):
        return None


@attrs.define(eq=False)
class GGUFFile:
    """A parsed GGUF file: metadata, tensor infos, and a read-only memory map of the data."""

    path: Path
    version: int
    kvs: list[KV]
    tensors: list[TensorInfo]
    alignment: int
    data_offset: int
    data: np.ndarray = attrs.field(repr=False)

    @classmethod
    def open(cls, path: str | os.PathLike[str], sizes: SizeLookup = gguf_sizes, file_index: int = 0) -> GGUFFile:
        """Parse and validate a GGUF file's header: every count, length, dimension and offset is checked against the
        file before use, tensors may not overlap, keys and names may not repeat — a malformed file raises
        :class:`GGUFFormatError` naming what is wrong.  ``sizes`` gives the block size and bytes of a type id (the
        types the caller knows: qf's registry passes its own, see ``Registry.type_sizes``)."""
        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise GGUFFormatError(f"{path}: cannot open: {exc.strerror}") from None
        if path.is_dir():
            raise GGUFFormatError(f"{path}: is a directory, not a GGUF file")
        if size < 24:
            raise GGUFFormatError(f"{path}: not a GGUF file (only {size} bytes)")
        try:
            data = np.memmap(path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as exc:  # unreadable, or emptied since stat()
            raise GGUFFormatError(f"{path}: cannot open: {getattr(exc, 'strerror', None) or exc}") from None
        size = len(data)
        cur = _Cursor(path, data)
        magic = cur.scalar("<I", "magic")
        if magic != GGUF_MAGIC:
            raise GGUFFormatError(f"{path}: not a GGUF file (magic {bytes(data[:4])!r}, expected b'GGUF')")
        version = cur.scalar("<I", "version")
        if version not in (2, 3):
            raise GGUFFormatError(f"{path}: unsupported GGUF version {version}")
        n_tensors = cur.scalar("<Q", "tensor count")
        n_kv = cur.scalar("<Q", "KV count")
        if n_tensors > size or n_kv > size:
            raise GGUFFormatError(f"{path}: corrupt GGUF header (tensor count {n_tensors}, KV count {n_kv})")

        kvs: list[KV] = []
        keys: set[str] = set()
        for i in range(n_kv):
            start = cur.pos
            key = cur.string(f"key of KV #{i}")
            if key in keys:
                raise GGUFFormatError(f"{path}: duplicate metadata key {shown(key)}")
            keys.add(key)
            vtype = cur.scalar("<I", f"type of {shown(key)}")
            value, item_type = cur.value(vtype, f"value of {shown(key)}")
            kvs.append(KV(key, vtype, value, item_type, bytes(cur.mv[start:cur.pos])))

        alignment = GGUF_DEFAULT_ALIGNMENT
        for kv in kvs:
            if kv.key == "general.alignment":
                if kv.vtype != GGUFValueType.UINT32 or kv.value == 0 or kv.value & (kv.value - 1):
                    raise GGUFFormatError(f"{path}: invalid general.alignment {shown(kv.value)}")
                alignment = kv.value

        infos = []
        for i in range(n_tensors):
            name = cur.string(f"name of tensor #{i}")
            n_dims = cur.scalar("<I", f"dims of {shown(name)}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise GGUFFormatError(f"{path}: tensor {shown(name)} has {n_dims} dimensions")
            shape = tuple(cur.scalar("<Q", f"shape of {shown(name)}") for _ in range(n_dims))
            if min(shape) == 0 or max(shape) > INT64_MAX:
                raise GGUFFormatError(f"{path}: tensor {shown(name)} has an invalid shape {list(shape)}")
            type_id = cur.scalar("<I", f"type of {shown(name)}")
            rel = cur.scalar("<Q", f"offset of {shown(name)}")
            infos.append((name, shape, type_id, rel))

        data_offset = -(-cur.pos // alignment) * alignment
        tensors = []
        seen: set[str] = set()
        for name, shape, type_id, rel in infos:
            if name in seen:
                raise GGUFFormatError(f"{path}: duplicate tensor name {shown(name)}")
            seen.add(name)
            bs_ts = sizes(type_id)
            if bs_ts is None:
                raise GGUFFormatError(
                    f"{path}: tensor {shown(name)} has ggml type id {type_id}, which no installed plugin knows"
                )
            block, type_size, *row_meta = bs_ts  # row metadata: bytes before each row's blocks (ik's types)
            if shape[0] % block:
                raise GGUFFormatError(
                    f"{path}: tensor {shown(name)} has row length {shape[0]},"
                    f" not a multiple of its type's block size {block}"
                )
            n_elements = 1
            for d in shape:
                n_elements *= d
            if n_elements > INT64_MAX:
                raise GGUFFormatError(f"{path}: tensor {shown(name)} has {n_elements} elements (shape {list(shape)}),"
                                      f" more than a 64-bit count holds")
            n_bytes = n_elements // block * type_size + (n_elements // shape[0]) * sum(row_meta)
            offset = data_offset + rel
            if rel % alignment:
                raise GGUFFormatError(f"{path}: tensor {shown(name)} data offset {rel} is not aligned to {alignment}")
            if offset + n_bytes > size:
                raise GGUFFormatError(
                    f"{path}: truncated: tensor {shown(name)} needs bytes {offset}..{offset + n_bytes} but the file has"
                    f" {size} bytes"
                )
            tensors.append(TensorInfo(name, type_id, shape, offset, n_bytes, file_index))
        by_offset = sorted(tensors, key=lambda t: t.offset)
        for a, b in zip(by_offset, by_offset[1:]):
            if a.offset + a.n_bytes > b.offset:
                raise GGUFFormatError(f"{path}: the data of tensors {shown(a.name)} and {shown(b.name)} overlap")
        return cls(path, version, kvs, tensors, alignment, data_offset, data)

    # -- access ----------------------------------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        for kv in self.kvs:
            if kv.key == key:
                return kv.value
        return default

    def kv(self, key: str) -> KV | None:
        return next((kv for kv in self.kvs if kv.key == key), None)

    @property
    def metadata(self) -> dict[str, Any]:
        return {kv.key: kv.value for kv in self.kvs}

    def tensor(self, name: str) -> TensorInfo:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def tensor_data(self, t: TensorInfo) -> np.ndarray:
        """The raw bytes of a tensor (a view of the memory map)."""
        return self.data[t.offset:t.offset + t.n_bytes]

    def release(self, t: TensorInfo) -> None:
        """Drop the tensor's pages from this process's resident set (they stay in the page cache)."""
        mm = getattr(self.data, "_mmap", None)
        if mm is None or not hasattr(mm, "madvise"):
            return
        page = mmap.PAGESIZE
        start = t.offset // page * page
        stop = min(len(self.data), -(-(t.offset + t.n_bytes) // page) * page)
        if stop > start:
            try:
                mm.madvise(mmap.MADV_DONTNEED, start, stop - start)
            except (OSError, ValueError):
                pass

    def row_bytes(self, t: TensorInfo) -> int:
        return t.n_bytes // t.n_rows

    def rows(self, t: TensorInfo, start: int, stop: int) -> np.ndarray:
        """Raw bytes of rows ``[start, stop)`` (rows counted across all higher dimensions), shape (rows, row_bytes)."""
        rb = self.row_bytes(t)
        return self.data[t.offset + start * rb:t.offset + stop * rb].reshape(stop - start, rb)
