"""The output file's metadata: llama-quantize's keys, ``--override-kv`` values, ``split.*`` keys."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from qf.errors import UsageError
from qf.gguf_io import KV, make_kv
from qf.gguf_io.constants import GGUFValueType as T
from qf.values import Preset

GGML_QNT_VERSION = 2
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")
FLOAT32_MAX = 3.4028234663852886e38


def parse_override_kv(spec: str) -> KV:
    """``KEY=TYPE:VALUE`` as llama.cpp's string_parse_kv_override takes it (bool, str; int written as the u32 of
    its absolute value, float as f32, as llama-quantize writes them) — but a value that is not a whole number of its
    type, or does not fit it, is refused instead of read as 0 or wrapped."""
    key, sep, rest = spec.partition("=")
    if not sep or not key or len(key) >= 128:
        raise UsageError(f"--override-kv: malformed KV override {spec!r} (expected KEY=TYPE:VALUE)")
    kind, colon, value = rest.partition(":")
    if not colon:
        raise UsageError(f"--override-kv: invalid type for KV override {spec!r} (int, float, bool or str)")
    if kind == "int":
        if not re.fullmatch(r"\s*[+-]?\d+\s*", value) or abs(int(value)) > 0xFFFFFFFF:
            raise UsageError(f"--override-kv: {spec!r}: not an integer of at most 32 bits")
        return make_kv(key, T.UINT32, abs(int(value)))
    if kind == "float":
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
            raise UsageError(f"--override-kv: {spec!r}: not a finite 32-bit float")
        return make_kv(key, T.FLOAT32, number)
    if kind == "bool":
        if value not in ("true", "false"):
            raise UsageError(f"--override-kv: invalid boolean value for KV override {spec!r}")
        return make_kv(key, T.BOOL, value == "true")
    if kind == "str":
        if len(value.encode()) > 127:
            raise UsageError(f"--override-kv: malformed KV override {spec!r}, value cannot exceed 127 chars")
        return make_kv(key, T.STRING, value)
    raise UsageError(f"--override-kv: invalid type {kind!r} for KV override {spec!r} (int, float, bool or str)")


def _truncate127(s: str) -> str:
    return s.encode("utf-8", errors="surrogateescape")[:127].decode("utf-8", errors="ignore")


def output_kvs(input_kvs: Sequence[KV], preset: Preset, overrides: Sequence[KV], imatrix, imatrix_arg: str | None,
               block_count: tuple[str, int] | None = None) -> list[KV]:
    """The output metadata in llama-quantize's order: input KVs, then the keys it sets (each set moves a key last)."""
    kvs = list(input_kvs)

    def set_kv(kv: KV) -> None:
        kvs[:] = [k for k in kvs if k.key != kv.key]
        kvs.append(kv)

    set_kv(make_kv("general.quantization_version", T.UINT32, GGML_QNT_VERSION))
    set_kv(make_kv("general.file_type", T.UINT32, preset.file_type))
    kvs[:] = [k for k in kvs if k.key not in SPLIT_KEYS]
    for kv in overrides:
        set_kv(kv)
    if imatrix is not None:
        set_kv(make_kv("quantize.imatrix.file", T.STRING, _truncate127(imatrix_arg or str(imatrix.path))))
        if imatrix.datasets:
            set_kv(make_kv("quantize.imatrix.dataset", T.STRING, _truncate127(imatrix.datasets[0])))
        set_kv(make_kv("quantize.imatrix.entries_count", T.UINT32, len(imatrix.entries)))
        if imatrix.chunk_count > 0:
            set_kv(make_kv("quantize.imatrix.chunks_count", T.UINT32, imatrix.chunk_count))
    if block_count is not None:
        set_kv(make_kv(block_count[0], T.UINT32, block_count[1]))
    return kvs


def split_kvs(split_no: int, n_split: int, n_tensors: int) -> list[KV]:
    """The keys gguf-split (and llama-quantize --keep-split) write in every shard."""
    return [make_kv("split.no", T.UINT16, split_no), make_kv("split.count", T.UINT16, n_split),
            make_kv("split.tensors.count", T.INT32, n_tensors)]
