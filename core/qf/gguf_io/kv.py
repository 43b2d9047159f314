"""GGUF metadata values: their binary encoding (shared by the reader and the writer) and :class:`KV`."""

from __future__ import annotations

import struct
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
#: numpy dtype of each scalar value type (arrays of scalars are read and written as numpy arrays)
NUMPY = {vtype: np.dtype(fmt if fmt != "<?" else "?") for vtype, fmt in SCALAR.items()}


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
        return head + b"".join(encode_value(item_type, v, None) for v in value)
    raise ValueError(f"cannot encode GGUF value type {vtype}")


def make_kv(key: str, vtype: int, value: Any, item_type: int | None = None) -> KV:
    raw = encode_string(key) + struct.pack("<I", vtype) + encode_value(vtype, value, item_type)
    return KV(key, int(vtype), value, item_type, raw)
