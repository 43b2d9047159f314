"""Importance matrices: reading llama.cpp's GGUF and legacy ``.dat`` formats, and per-tensor lookup.

Values are what llama-quantize hands to ggml: GGUF ``in_sum2 / count`` per matrix (1.0 where the count is 0), legacy
``stored / ncall``.  Entries of 3-D (expert) tensors hold one ``ne0``-slice per expert.  (Writing them is the
collector's job: ``qf_arches.imatrix.files``.)
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import attrs
import numpy as np

from qf.errors import GGUFFormatError, ImatrixError
from qf.gguf_io.constants import GGUFValueType
from qf.gguf_io.kv import INTEGER_TYPES, KV
from qf.gguf_io.reader import shown

#: llama-imatrix's default chunk size; converts legacy ncall counts into token counts when no other is known
DEFAULT_CHUNK_SIZE = 512
UINT32_MAX = 0xFFFFFFFF


def _type_name(kv: KV) -> str:
    name = GGUFValueType(kv.vtype).name.lower()
    return f"array of {GGUFValueType(kv.item_type).name.lower()}" if kv.item_type is not None else name


@attrs.define(eq=False)
class Imatrix:
    path: Path
    entries: dict[str, np.ndarray]  # name -> float32 (n_mat * ne0,)
    datasets: list[str] = attrs.field(factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    is_legacy: bool = False
    #: in_sum2 and counts as stored (GGUF) — kept for conversion and statistics
    raw_sums: dict[str, np.ndarray] = attrs.field(factory=dict, repr=False)
    raw_counts: dict[str, np.ndarray] = attrs.field(factory=dict, repr=False)

    @classmethod
    def from_sums(cls, sums: dict[str, np.ndarray], counts: dict[str, np.ndarray], datasets: list[str] = (),
                  chunk_count: int = 0, chunk_size: int = 0, path: str | os.PathLike[str] | None = None) -> Imatrix:
        """An imatrix from raw sums ``(n_mat, ne0)`` and counts ``(n_mat,)`` per entry (what llama-imatrix keeps)."""
        raw_sums, raw_counts, entries = {}, {}, {}
        for name in sorted(sums):
            s = np.asarray(sums[name], np.float32)
            c = np.asarray(counts[name], np.float32).reshape(-1)
            s = s.reshape(c.size, -1)
            values = np.ones_like(s)
            nz = c > 0
            values[nz] = s[nz] / c[nz, None]
            raw_sums[name], raw_counts[name], entries[name] = s, c, values.reshape(-1)
        return cls(None if path is None else Path(path), entries, list(datasets), int(chunk_count), int(chunk_size),
                   False, raw_sums, raw_counts)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Imatrix:
        path = Path(path)
        try:
            with open(path, "rb") as fh:
                magic = fh.read(4)
        except OSError as exc:
            raise ImatrixError(f"imatrix file {path}: cannot open: {exc.strerror}") from None
        imatrix = cls._load_gguf(path) if magic == b"GGUF" else cls._load_legacy(path)
        imatrix._check_finite()
        return imatrix

    # -- formats ---------------------------------------------------------------------------------------------------
    @classmethod
    def _load_gguf(cls, path: Path) -> Imatrix:
        from qf.gguf_io import GGUFFile

        try:
            f = GGUFFile.open(path)
        except GGUFFormatError as exc:
            raise ImatrixError(f"imatrix file {exc}") from None
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, np.ndarray] = {}
        for t in f.tensors:
            for suffix, table in ((".in_sum2", sums), (".counts", counts)):
                if t.name.endswith(suffix):
                    if t.type_id != 0:
                        raise ImatrixError(f"imatrix file {path}: tensor {shown(t.name)} must be F32")
                    table[t.name[: -len(suffix)]] = f.tensor_data(t).view(np.float32).reshape(t.shape[::-1])
        if not sums and not counts:
            kind = f.get("general.type", "?")
            raise ImatrixError(
                f"imatrix file {path}: a GGUF file with no *.in_sum2 tensors (general.type = {shown(kind)})"
            )
        datasets, chunk_count, chunk_size = (f.kv(f"imatrix.{k}") for k in ("datasets", "chunk_count", "chunk_size"))
        if datasets is None or chunk_count is None or chunk_size is None:
            raise ImatrixError(
                f"imatrix file {path}: missing imatrix metadata (imatrix.datasets/chunk_count/chunk_size)"
            )
        if datasets.vtype != GGUFValueType.ARRAY or datasets.item_type != GGUFValueType.STRING:
            raise ImatrixError(f"imatrix file {path}: imatrix.datasets must be an array of strings, not"
                               f" {_type_name(datasets)} {shown(datasets.value)}")
        for kv in (chunk_count, chunk_size):
            if kv.vtype not in INTEGER_TYPES or not 0 <= kv.value <= UINT32_MAX:
                raise ImatrixError(f"imatrix file {path}: {kv.key} must be an integer of at most 32 bits, not"
                                   f" {_type_name(kv)} {shown(kv.value)}")
        entries = {}
        for name in sorted(set(sums) | set(counts)):
            if name not in sums or name not in counts:
                raise ImatrixError(f"imatrix file {path}: mismatched in_sum2 and counts for {shown(name)}")
            c = np.asarray(counts[name], np.float32).reshape(-1)
            if not np.isfinite(c).all() or (c < 0).any():
                bad = c[~np.isfinite(c) | (c < 0)][0]
                raise ImatrixError(f"imatrix file {path}: {shown(name)} has an invalid count {bad}")
            c = np.rint(c)  # lround, as llama.cpp
            s = np.asarray(sums[name], np.float32).reshape(-1)
            if c.size == 0 or s.size % c.size:
                raise ImatrixError(
                    f"imatrix file {path}: {shown(name)} has {s.size} sums, not a multiple of {c.size} counts"
                )
            s = s.reshape(c.size, -1)  # (n_mat, ne0)
            values = np.ones_like(s)
            nz = c > 0
            with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN are reported by _check_finite
                values[nz] = s[nz] / c[nz, None].astype(np.float32)
            entries[name] = values.reshape(-1)
            sums[name], counts[name] = s.copy(), c.copy()
        return cls(path, entries, list(datasets.value), int(chunk_count.value), int(chunk_size.value), False, sums,
                   counts)

    @classmethod
    def _load_legacy(cls, path: Path) -> Imatrix:
        try:  # mapped, not read: a large file that is no imatrix is refused after a few bytes
            data = memoryview(np.memmap(path, np.uint8, mode="r")) if path.stat().st_size else memoryview(b"")
        except (OSError, ValueError) as exc:
            raise ImatrixError(f"imatrix file {path}: cannot open: {getattr(exc, 'strerror', None) or exc}") from None
        pos = 0

        def take(fmt: str, what: str):
            nonlocal pos
            size = struct.calcsize(fmt)
            if pos + size > len(data):
                raise ImatrixError(
                    f"imatrix file {path}: neither GGUF nor a valid legacy .dat file (truncated reading {what} at"
                    f" byte {pos})"
                )
            values = struct.unpack_from(fmt, data, pos)
            pos += size
            return values

        (n_entries,) = take("<i", "the entry count")
        if n_entries < 1 or n_entries > len(data):
            raise ImatrixError(
                f"imatrix file {path}: neither GGUF nor a valid legacy .dat file (entry count {n_entries})"
            )
        entries: dict[str, np.ndarray] = {}
        counts: dict[str, np.ndarray] = {}
        for i in range(n_entries):
            (length,) = take("<i", f"entry {i + 1}'s name length")
            if length <= 0 or pos + length > len(data):
                raise ImatrixError(f"imatrix file {path}: bad name length {length} for entry {i + 1}")
            name = bytes(data[pos:pos + length]).decode("utf-8", errors="replace")
            pos += length
            if name in entries:
                raise ImatrixError(f"imatrix file {path}: duplicate entry {shown(name)}")
            ncall, nval = take("<ii", f"entry {shown(name)}'s counts")
            if nval < 1 or pos + 4 * nval > len(data):
                raise ImatrixError(f"imatrix file {path}: entry {shown(name)} has an invalid value count {nval}")
            stored = np.frombuffer(data, np.float32, nval, pos).copy()
            pos += 4 * nval
            with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN are reported by _check_finite
                entries[name] = stored / np.float32(ncall) if ncall > 0 else stored
            counts[name] = np.array([ncall], np.float32)
        chunk_count, datasets = 0, []
        if pos < len(data):
            (chunk_count,) = take("<i", "the chunk count")
            if chunk_count < 0:
                raise ImatrixError(f"imatrix file {path}: invalid chunk count {chunk_count}")
            if pos + 4 <= len(data):
                (length,) = take("<i", "the dataset name length")
                if length > 0 and pos + length <= len(data):
                    datasets.append(bytes(data[pos:pos + length]).decode("utf-8", errors="replace"))
        return cls(path, entries, datasets, chunk_count, 0, True, {}, counts)

    # -- checks and lookup -----------------------------------------------------------------------------------------
    def _check_finite(self) -> None:
        for name, values in self.entries.items():
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise ImatrixError(
                    f"imatrix file {self.path}: entry {shown(name)} has a non-finite value ({values[bad[0]]}) at index"
                    f" {bad[0]}"
                )

    def filtered(self, include: list[str] = (), exclude: list[str] = ()) -> Imatrix:
        """llama-quantize's --include-weights / --exclude-weights: keep/drop entries whose name contains a string."""
        entries = dict(self.entries)
        for pattern in exclude:
            entries = {k: v for k, v in entries.items() if pattern not in k}
        if include:
            entries = {k: v for k, v in entries.items() if any(p in k for p in include)}
        return attrs.evolve(self, entries=entries)

    def lookup(self, imatrix_name: str, tensor_name: str, ne0: int, n_mat: int) -> np.ndarray | None:
        """The entry for a tensor as a float32 ``(n_mat, ne0)`` array, or None if absent.

        A size mismatch is an error (as in llama-quantize), except for token_embd, which is then used without one.
        """
        values = self.entries.get(imatrix_name)
        if values is None:
            return None
        if values.size != ne0 * n_mat:
            if tensor_name in ("token_embd.weight", "per_layer_token_embd.weight"):
                return None
            raise ImatrixError(
                f"imatrix file {self.path}: entry {imatrix_name!r} has {values.size} values but tensor {tensor_name!r}"
                f" needs {ne0 * n_mat} ({ne0} columns x {n_mat} matrices)"
            )
        return values.reshape(n_mat, ne0)

    # -- raw data and saving ---------------------------------------------------------------------------------------
    def sums_and_counts(self, chunk_size: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per entry: sums float32 ``(n_mat, ne0)`` and counts int64 ``(n_mat,)``.

        A legacy file stores ``value · ncall`` and ``ncall`` chunks; like llama-imatrix, ``chunk_size`` tokens per call
        turn them back into sums and token counts.
        """
        out = {}
        for name, values in self.entries.items():
            if name in self.raw_sums:
                out[name] = (self.raw_sums[name].astype(np.float32, copy=True),
                             np.rint(self.raw_counts[name]).astype(np.int64).reshape(-1))
                continue
            size = chunk_size or self.chunk_size or DEFAULT_CHUNK_SIZE
            ncall = int(self.raw_counts.get(name, np.ones(1))[0])
            stored = (values * np.float32(ncall)).astype(np.float32)
            out[name] = ((stored * np.float32(size)).reshape(1, -1), np.array([ncall * size], np.int64))
        return out
