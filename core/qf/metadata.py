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
    if not sep or not key:
        raise UsageError(f"--override-kv: malformed KV override {_shown(spec)} (expected KEY=TYPE:VALUE)")
    key_bytes = _utf8(key, spec)
    if len(key_bytes) >= 128:
        raise UsageError(f"--override-kv: malformed KV override {_shown(spec)}: the key is longer than 127 bytes")
    kind, colon, value = rest.partition(":")
    if not colon:
        raise UsageError(f"--override-kv: invalid type for KV override {_shown(spec)} (int, float, bool or str)")
    if kind == "int":
        digits = re.fullmatch(r"\s*[+-]?0*([0-9]+)\s*", value, re.ASCII)  # sign dropped: |value| is written
        if digits is None or len(digits.group(1)) > 10 or int(digits.group(1)) > 0xFFFFFFFF:
            raise UsageError(f"--override-kv: {_shown(spec)}: not an integer of at most 32 bits")
        return make_kv(key, T.UINT32, int(digits.group(1)))
    if kind == "float":
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
            raise UsageError(f"--override-kv: {_shown(spec)}: not a finite 32-bit float")
        return make_kv(key, T.FLOAT32, number)
    if kind == "bool":
        if value not in ("true", "false"):
            raise UsageError(f"--override-kv: invalid boolean value for KV override {_shown(spec)}")
        return make_kv(key, T.BOOL, value == "true")
    if kind == "str":
        if len(_utf8(value, spec)) > 127:
            raise UsageError(f"--override-kv: malformed KV override {_shown(spec)}, value cannot exceed 127 bytes")
        return make_kv(key, T.STRING, value)
    raise UsageError(f"--override-kv: invalid type {_shown(kind)} for KV override {_shown(spec)}"
                     " (int, float, bool or str)")


def _utf8(text: str, spec: str) -> bytes:
    """``text`` as the bytes written to the file (command-line arguments that were not UTF-8 come back as they were
    given, as llama.cpp would write them); a string that has no bytes (a lone surrogate) is refused."""
    try:
        return text.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError as exc:
        raise UsageError(f"--override-kv: {_shown(spec)}: not UTF-8 text (character {exc.start})") from None


def _shown(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else f"{shown[:60]}... ({len(text)} characters)"


def _truncate127(s: str) -> str:
    return s.encode("utf-8", errors="surrogateescape")[:127].decode("utf-8", errors="ignore")


def output_kvs(input_kvs: Sequence[KV], preset: Preset, overrides: Sequence[KV], imatrix, imatrix_arg: str | None,
               block_count: tuple[str, int] | None = None, style: str = "llama.cpp") -> list[KV]:
    """The output metadata in llama-quantize's order: input KVs, then the keys it sets (each set moves a key last).

    ``style="ik_llama.cpp"``: ik's llama-quantize, whose (older) gguf keeps a key it sets where it was (a new one
    goes last), which sets ``general.file_type`` after the overrides, and whose imatrix counts are int32 overrides."""
    ik = style == "ik_llama.cpp"
    kvs = list(input_kvs)

    def set_kv(kv: KV) -> None:
        at = next((i for i, k in enumerate(kvs) if k.key == kv.key), None)
        if ik and at is not None:
            kvs[at] = kv
            return
        kvs[:] = [k for k in kvs if k.key != kv.key]
        kvs.append(kv)

    file_type = make_kv("general.file_type", T.UINT32, preset.file_type)
    count = T.INT32 if ik else T.UINT32
    set_kv(make_kv("general.quantization_version", T.UINT32, GGML_QNT_VERSION))
    if not ik:
        set_kv(file_type)
    kvs[:] = [k for k in kvs if k.key not in SPLIT_KEYS]
    for kv in overrides:
        set_kv(kv)
    if imatrix is not None:
        set_kv(make_kv("quantize.imatrix.file", T.STRING, _truncate127(imatrix_arg or str(imatrix.path))))
        if imatrix.datasets:
            set_kv(make_kv("quantize.imatrix.dataset", T.STRING, _truncate127(imatrix.datasets[0])))
        set_kv(make_kv("quantize.imatrix.entries_count", count, len(imatrix.entries)))
        if imatrix.chunk_count > 0:
            set_kv(make_kv("quantize.imatrix.chunks_count", count, imatrix.chunk_count))
    if ik:
        set_kv(file_type)
    if block_count is not None:
        set_kv(make_kv(block_count[0], T.UINT32, block_count[1]))
    return kvs


def split_kvs(split_no: int, n_split: int, n_tensors: int) -> list[KV]:
    """The keys gguf-split (and llama-quantize --keep-split) write in every shard."""
    return [make_kv("split.no", T.UINT16, split_no), make_kv("split.count", T.UINT16, n_split),
            make_kv("split.tensors.count", T.INT32, n_tensors)]
