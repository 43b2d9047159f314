"""GGUF metadata values: their binary encoding (shared by the reader and the writer) and :class:`KV`."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from qf.gguf_io.constants import GGUFValueType

#: struct format of each scalar value type
SCALAR = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
#: the integer value types (bool is not one)
INTEGER_TYPES = frozenset({GGUFValueType.UINT8, GGUFValueType.INT8, GGUFValueType.UINT16, GGUFValueType.INT16,
                           GGUFValueType.UINT32, GGUFValueType.INT32, GGUFValueType.UINT64, GGUFValueType.INT64})
#: numpy dtype of each scalar value type (arrays of scalars are read and written as numpy arrays)
NUMPY = {vtype: np.dtype(fmt if fmt != "<?" else "?") for vtype, fmt in SCALAR.items()}
_U64 = struct.Struct("<Q")


def decode_strings(raw: bytes, count: int) -> list[str]:
    """The ``count`` length-prefixed UTF-8 strings of ``raw`` (bytes that are not UTF-8 are kept as surrogates, so
    encoding them again gives the same bytes)."""
    length = _U64.unpack_from
    mv = memoryview(raw)
    out = []
    append = out.append
    pos = 0
    for _ in range(count):
        n = length(mv, pos)[0]
        pos += 8
        item = mv[pos:pos + n]
        pos += n
        try:
            append(str(item, "utf-8"))
        except UnicodeDecodeError:
            append(bytes(item).decode("utf-8", errors="surrogateescape"))
    return out


class StringArray(Sequence):
    """A GGUF string array kept as its encoded bytes (already checked by the reader) and decoded on first use."""

    __slots__ = ("encoded", "_count", "_items")

    def __init__(self, encoded: bytes, count: int) -> None:
        self.encoded = encoded
        self._count = count
        self._items: list[str] | None = None

    def _decoded(self) -> list[str]:
        if self._items is None:
            self._items = decode_strings(self.encoded, self._count)
        return self._items

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):
        return self._decoded()[index]

    def __iter__(self):
        return iter(self._decoded())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StringArray):
            return self._count == other._count and self.encoded == other.encoded
        if isinstance(other, (list, tuple)):
            return self._decoded() == list(other)
        return NotImplemented

    __hash__ = None

    def __repr__(self) -> str:
        return f"StringArray({self._count} strings)"


@attrs.frozen
class KV:
    """One metadata key/value; ``raw`` is its exact encoding (key, type, value) as found in the file."""

    key: str
    vtype: int
    value: Any = attrs.field(eq=False)
    item_type: int | None = None
    raw: bytes = attrs.field(default=b"", repr=False)


def encode_string(s: str) -> bytes:
    b = s.encode("utf-8", errors="surrogateescape")
    return struct.pack("<Q", len(b)) + b


def encode_value(vtype: int, value: Any, item_type: int | None) -> bytes:
    if vtype == GGUFValueType.STRING:
        return encode_string(value)
    if vtype in SCALAR:
        return struct.pack(SCALAR[vtype], value)
    if vtype == GGUFValueType.ARRAY:
        if item_type is None:
            raise ValueError("an array value needs its item type")
        head = struct.pack("<IQ", item_type, len(value))
        if item_type in NUMPY:
            return head + np.asarray(value, dtype=NUMPY[item_type]).tobytes()
        if isinstance(value, StringArray) and item_type == GGUFValueType.STRING:
            return head + value.encoded
        return head + b"".join(encode_value(item_type, v, None) for v in value)
    raise ValueError(f"cannot encode GGUF value type {vtype}")


def make_kv(key: str, vtype: int, value: Any, item_type: int | None = None) -> KV:
    raw = encode_string(key) + struct.pack("<I", vtype) + encode_value(vtype, value, item_type)
    return KV(key, int(vtype), value, item_type, raw)
