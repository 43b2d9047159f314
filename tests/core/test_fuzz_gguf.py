"""Fuzzing the readers of untrusted binary files: GGUF models (``GGUFFile.open``, ``TensorSource.open``) and
importance matrices (``Imatrix.load``, GGUF and legacy ``.dat``).

Every input either reads correctly — and then every tensor's bytes lie inside its file — or raises the format's
one-line error (:class:`GGUFFormatError`, :class:`ImatrixError`): never another exception, never an allocation out
of proportion to the file, never a long wait.  Inputs are valid seed files with mutations applied (truncation, bit
flips, inserted/deleted/copied bytes, and every length, count, type id, dimension and offset field overwritten with
extreme values), plus headers generated from scratch.

The seeds, mutations and checks here are shared with ``benchmarks/fuzz_gguf.py`` (the long run) and the
memory-limited sweep below (a subprocess under ``RLIMIT_AS``).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from gguf.constants import GGUFValueType as T
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qf.errors import GGUFFormatError, ImatrixError, QfError
from qf.gguf_io import KV, GGUFFile, GGUFStreamWriter, OutTensor, TensorSource, gguf_sizes, make_kv
from qf.gguf_io.kv import NUMPY, encode_string
from qf.imatrix import Imatrix

# ------------------------------------------------------------------------------------------------------------------
# seeds: small valid files
# ------------------------------------------------------------------------------------------------------------------

SCALARS = [(T.UINT8, 200), (T.INT8, -5), (T.UINT16, 60000), (T.INT16, -300), (T.UINT32, 4_000_000_000),
           (T.INT32, -7), (T.FLOAT32, 0.25), (T.BOOL, True), (T.UINT64, 2**63 + 5), (T.INT64, -(2**40)),
           (T.FLOAT64, -1.5)]
#: (name, ggml shape, type id, bytes): F32, F16, Q4_0, Q8_0, BF16; 1-D to 4-D
TENSORS = [("norm.weight", (8,), 0, 32), ("emb.weight", (32, 3), 1, 192), ("q4.weight", (64, 2), 2, 72),
           ("q8.weight", (32, 2, 2), 8, 136), ("cube.weight", (2, 1, 3, 2), 0, 48), ("bf.weight", (4, 2), 30, 16)]


def nested_kv(key: str, inner_type: int, items: Sequence[Sequence]) -> KV:
    """An array of arrays (``make_kv`` encodes one level only)."""
    body = struct.pack("<IQ", T.ARRAY, len(items))
    for inner in items:
        body += struct.pack("<IQ", inner_type, len(inner))
        if inner_type in NUMPY:
            body += np.asarray(inner, NUMPY[inner_type]).tobytes()
        else:
            body += b"".join(encode_string(s) for s in inner)
    return KV(key, T.ARRAY, list(items), T.ARRAY, encode_string(key) + struct.pack("<I", T.ARRAY) + body)


def model_kvs(extra: Sequence[KV] = ()) -> list[KV]:
    kvs = [make_kv("general.architecture", T.STRING, "llama"), make_kv("general.name", T.STRING, "fuzz-é")]
    kvs += [make_kv(f"test.{T(vtype).name.lower()}", vtype, value) for vtype, value in SCALARS]
    kvs += [make_kv("test.i32s", T.ARRAY, [1, -2, 3], T.INT32), make_kv("test.f32s", T.ARRAY, [0.5, 2.0], T.FLOAT32),
            make_kv("test.bools", T.ARRAY, [True, False], T.BOOL), make_kv("test.empty", T.ARRAY, [], T.UINT8),
            make_kv("test.u64s", T.ARRAY, [2**64 - 1], T.UINT64),
            make_kv("tokenizer.ggml.tokens", T.ARRAY, ["<s>", "a", "bé", "", "日本"], T.STRING),
            nested_kv("test.nested", T.INT32, [[1, 2], [3], []]), nested_kv("test.nested_strs", T.STRING, [["x"], []])]
    return kvs + list(extra)


def gguf_bytes(kvs: Sequence[KV], tensors: Sequence[tuple] = TENSORS, alignment: int = 32, seed: int = 0) -> bytes:
    """A GGUF file written by qf's streaming writer; tensor data is random bytes of each tensor's size."""
    rng = np.random.default_rng(seed)
    out = [OutTensor(name, shape, type_id, n_bytes) for name, shape, type_id, n_bytes in tensors]
    fh = io.BytesIO()
    writer = GGUFStreamWriter(fh, list(kvs), out, alignment)
    for t in out:
        writer.begin(t.name)
        writer.write(rng.integers(0, 256, t.n_bytes, dtype=np.uint8))
    writer.close()
    return fh.getvalue()


def imatrix_gguf_bytes() -> bytes:
    kvs = [make_kv("general.type", T.STRING, "imatrix"), make_kv("imatrix.datasets", T.ARRAY, ["calib.txt"], T.STRING),
           make_kv("imatrix.chunk_count", T.UINT32, 3), make_kv("imatrix.chunk_size", T.UINT32, 512)]
    sums = {"blk.0.ffn_up.weight": (np.arange(32, dtype=np.float32) + 1, 1),
            "blk.0.ffn_down_exps.weight": (np.linspace(0.5, 4, 64, dtype=np.float32), 2)}
    tensors, blobs = [], []
    for name, (values, n_mat) in sorted(sums.items()):
        ne0 = values.size // n_mat
        counts = np.full(n_mat, 4.0, np.float32)
        tensors += [(f"{name}.in_sum2", (ne0, n_mat) if n_mat > 1 else (ne0,), 0, values.nbytes),
                    (f"{name}.counts", (1, n_mat) if n_mat > 1 else (1,), 0, counts.nbytes)]
        blobs += [values, counts]
    out = [OutTensor(*t) for t in tensors]
    fh = io.BytesIO()
    writer = GGUFStreamWriter(fh, kvs, out)
    for t, blob in zip(out, blobs):
        writer.begin(t.name)
        writer.write(blob)
    writer.close()
    return fh.getvalue()


def imatrix_dat_bytes() -> bytes:
    """llama-imatrix's legacy format: entries (name, ncall, values), then the chunk count and the dataset name."""
    parts = [struct.pack("<i", 2)]
    for name, n in (("blk.0.attn_q.weight", 16), ("output.weight", 8)):
        raw = name.encode()
        parts.append(struct.pack("<i", len(raw)) + raw + struct.pack("<ii", 2, n))
        parts.append((np.arange(n, dtype=np.float32) * np.float32(2)).tobytes())
    parts.append(struct.pack("<ii", 5, 9) + b"calib.txt")
    return b"".join(parts)


# -- where the fields are ------------------------------------------------------------------------------------------

class Field(tuple):
    """``(pos, width, kind)`` of an integer field in a seed: what a targeted mutation overwrites."""

    @property
    def pos(self) -> int:
        return self[0]

    @property
    def width(self) -> int:
        return self[1]

    @property
    def kind(self) -> str:
        return self[2]


def gguf_fields(data: bytes) -> list[Field]:
    """Every integer field of a valid GGUF header (an independent walk, not the reader under test)."""
    fields: list[Field] = []
    pos = 0

    def take(width: int, kind: str) -> int:
        nonlocal pos
        fields.append(Field((pos, width, kind)))
        value = int.from_bytes(data[pos:pos + width], "little")
        pos += width
        return value

    def string(kind: str) -> None:
        nonlocal pos
        n = take(8, kind)
        pos += n

    def value(vtype: int) -> None:
        nonlocal pos
        if vtype == T.STRING:
            string("value length")
        elif vtype == T.ARRAY:
            item = take(4, "item type")
            count = take(8, "array count")
            for _ in range(count):
                value(item)
        else:
            width = NUMPY[vtype].itemsize
            take(width, "scalar")

    take(4, "magic")
    take(4, "version")
    n_tensors = take(8, "tensor count")
    n_kv = take(8, "KV count")
    for _ in range(n_kv):
        string("key length")
        value(take(4, "value type"))
    for _ in range(n_tensors):
        string("name length")
        for _ in range(take(4, "n_dims")):
            take(8, "dim")
        take(4, "type id")
        take(8, "offset")
    return fields


def dat_fields(data: bytes) -> list[Field]:
    fields: list[Field] = []
    pos = 0

    def take(kind: str) -> int:
        nonlocal pos
        fields.append(Field((pos, 4, kind)))
        value = int.from_bytes(data[pos:pos + 4], "little", signed=True)
        pos += 4
        return value

    for _ in range(take("entry count")):
        n = take("name length")
        pos += n
        take("ncall")
        n = take("value count")
        pos += 4 * n
    take("chunk count")
    take("dataset length")
    return fields


class Seed:
    """A named valid file, its fields, and how it is checked (``kind``: gguf, split, imatrix)."""

    def __init__(self, name: str, data: bytes, kind: str, fields: list[Field], companion: bytes | None = None):
        self.name, self.data, self.kind, self.fields, self.companion = name, data, kind, fields, companion

    def __repr__(self) -> str:
        return f"Seed({self.name})"


def build_seeds() -> list[Seed]:
    model = gguf_bytes(model_kvs())
    aligned = gguf_bytes(model_kvs([make_kv("general.alignment", T.UINT32, 64)]), alignment=64, seed=1)
    split_keys = [make_kv("split.no", T.UINT16, 0), make_kv("split.count", T.UINT16, 2),
                  make_kv("split.tensors.count", T.INT32, len(TENSORS))]
    split1 = gguf_bytes(model_kvs(split_keys), TENSORS[:3], seed=2)
    split2 = gguf_bytes([make_kv("split.no", T.UINT16, 1), *split_keys[1:]], TENSORS[3:], seed=3)
    im = imatrix_gguf_bytes()
    dat = imatrix_dat_bytes()
    return [Seed("model", model, "gguf", gguf_fields(model)), Seed("aligned", aligned, "gguf", gguf_fields(aligned)),
            Seed("split", split1, "split", gguf_fields(split1), companion=split2),
            Seed("imatrix-gguf", im, "imatrix", gguf_fields(im)), Seed("imatrix-dat", dat, "imatrix", dat_fields(dat))]


SEEDS = build_seeds()

# ------------------------------------------------------------------------------------------------------------------
# mutations: plain tuples, so that hypothesis prints (and shrinks) them and the long run draws them with `random`
# ------------------------------------------------------------------------------------------------------------------

#: values a length, count, dimension, offset or type field is overwritten with (masked to the field's width)
EXTREMES = (0, 1, 2, 3, 7, 8, 12, 31, 32, 33, 64, 255, 256, 2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
            2**40, 2**60, 2**62, 2**63 - 1, 2**63, 2**64 - 12, 2**64 - 1)
#: the sweep's subset
SWEEP_VALUES = (0, 1, 2**31, 2**63 - 1, 2**64 - 1, "len")


def apply(data: bytes, mutations: Sequence[tuple], fields: Sequence[Field]) -> bytes:
    """Apply ``mutations`` in order.  Positions wrap around the current length; field values are masked to width:

    ``("truncate", n)``, ``("flip", pos, bit)``, ``("byte", pos, value)``, ``("insert", pos, bytes)``,
    ``("delete", pos, n)``, ``("copy", src, dst, n)``, ``("field", index, value)`` where value is an int, ``"len"``
    (the file's length), ``"+N"``/``"-N"`` (relative to the field's value) or ``"x2"``."""
    buf = bytearray(data)
    for m in mutations:
        op = m[0]
        n = len(buf)
        if op == "truncate":
            del buf[m[1] % (n + 1):]
        elif n == 0:
            continue
        elif op == "flip":
            buf[m[1] % n] ^= 1 << m[2]
        elif op == "byte":
            buf[m[1] % n] = m[2]
        elif op == "insert":
            pos = m[1] % (n + 1)
            buf[pos:pos] = m[2]
        elif op == "delete":
            del buf[m[1] % n:m[1] % n + m[2]]
        elif op == "copy":
            src, dst = m[1] % n, m[2] % n
            chunk = buf[src:src + m[3]]
            buf[dst:dst + len(chunk)] = chunk
        elif op == "field":
            f = fields[m[1] % len(fields)]
            if f.pos + f.width > n:
                continue
            old = int.from_bytes(buf[f.pos:f.pos + f.width], "little")
            value = m[2]
            if value == "len":
                value = n
            elif value == "x2":
                value = old * 2
            elif isinstance(value, str):
                value = old + int(value)
            value &= (1 << (8 * f.width)) - 1
            buf[f.pos:f.pos + f.width] = value.to_bytes(f.width, "little")
        else:
            raise ValueError(f"unknown mutation {m!r}")
    return bytes(buf)


def random_mutation(rnd: random.Random, seed: Seed) -> tuple:
    """One mutation drawn with ``random`` (the long run's generator; the tests draw them with hypothesis)."""
    n = len(seed.data)
    op = rnd.choices(["field", "truncate", "flip", "byte", "insert", "delete", "copy"], [8, 2, 3, 2, 1, 1, 1])[0]
    if op == "field":
        r = rnd.random()
        if r < 0.5:
            value = rnd.choice(EXTREMES)
        elif r < 0.7:
            value = rnd.choice(("len", "x2", f"+{rnd.randint(1, 64)}", f"-{rnd.randint(1, 64)}"))
        elif r < 0.85:
            value = rnd.randint(0, 48)  # near the valid type ids, dims and counts
        else:
            value = rnd.getrandbits(64)
        return ("field", rnd.randrange(len(seed.fields)), value)
    if op == "truncate":
        return ("truncate", rnd.randrange(n + 1))
    if op == "flip":
        return ("flip", rnd.randrange(n), rnd.randrange(8))
    if op == "byte":
        return ("byte", rnd.randrange(n), rnd.choice((0, 0xFF, 0x7F, 0x80, rnd.randrange(256))))
    if op == "insert":
        return ("insert", rnd.randrange(n + 1), rnd.randbytes(rnd.randint(1, 16)))
    if op == "delete":
        return ("delete", rnd.randrange(n), rnd.randint(1, 16))
    return ("copy", rnd.randrange(n), rnd.randrange(n), rnd.randint(1, 64))


# ------------------------------------------------------------------------------------------------------------------
# headers generated from scratch: semantic combinations byte mutation rarely reaches (duplicates, overlaps,
# alignment, nesting, counts that disagree with the data)
# ------------------------------------------------------------------------------------------------------------------

def header_from_parts(version: int, kvs: Sequence[bytes], infos: Sequence[tuple], data_len: int,
                      n_tensors: int | None = None, n_kv: int | None = None, pad_to: int = 32) -> bytes:
    """``infos``: (name, dims, type id, offset); counts default to the actual ones."""
    head = struct.pack("<IIQQ", 0x46554747, version, len(infos) if n_tensors is None else n_tensors,
                       len(kvs) if n_kv is None else n_kv)
    head += b"".join(kvs)
    for name, dims, type_id, offset in infos:
        head += encode_string(name) + struct.pack("<I", len(dims))
        head += b"".join(struct.pack("<Q", d & (2**64 - 1)) for d in dims)
        head += struct.pack("<IQ", type_id & 0xFFFFFFFF, offset & (2**64 - 1))
    head += bytes(-len(head) % pad_to)
    return head + bytes(data_len)


def deep_array(depth: int, inner: int = T.INT32) -> bytes:
    """The value of an array nested ``depth`` deep (each level holding one array; innermost empty)."""
    body = struct.pack("<IQ", inner, 0)
    for _ in range(depth):
        body = struct.pack("<IQ", T.ARRAY, 1) + body
    return body


# ------------------------------------------------------------------------------------------------------------------
# the checks: what "reads correctly" means
# ------------------------------------------------------------------------------------------------------------------

#: how much a reader may allocate per byte of input (vocabularies and nested arrays become Python objects), and
#: a constant for the rest; a length field claiming 2**60 items must be refused before it allocates anything
MEMORY_PER_BYTE = 40
MEMORY_BASE = 1 << 20
#: no single input may take longer than this (the hypothesis deadline and the long run's limit)
TIME_LIMIT_S = 2.0
REGISTRY_SIZES: Callable | None = None


def registry_sizes() -> Callable:
    """The registry's type table (plugin types included), as ``qf quantize`` opens models."""
    global REGISTRY_SIZES
    if REGISTRY_SIZES is None:
        from qf.plugins import get_registry

        REGISTRY_SIZES = get_registry().type_sizes()
    return REGISTRY_SIZES


def check_error(exc: QfError, path: Path) -> None:
    """A user-facing error: one line, of reasonable length, naming the file."""
    message = str(exc)
    assert "\n" not in message and "\r" not in message, f"multi-line error: {message!r}"
    assert len(message) <= 400 + len(str(path)), f"overlong error ({len(message)} chars): {message[:200]!r}..."
    assert path.name in message, f"error does not name the file: {message!r}"


def check_gguf(f: GGUFFile, size: int, sizes: Callable = gguf_sizes) -> None:
    """A GGUF file that opened: its header is consistent and every tensor's bytes lie inside the file."""
    assert len(f.data) == size
    assert f.alignment > 0 and f.alignment & (f.alignment - 1) == 0
    assert f.data_offset % f.alignment == 0
    keys = [kv.key for kv in f.kvs]
    assert len(set(keys)) == len(keys)
    assert 24 + sum(len(kv.raw) for kv in f.kvs) <= min(f.data_offset, size)
    for kv in f.kvs:
        assert isinstance(kv.key, str) and isinstance(kv.raw, bytes)
        assert kv.vtype in (T.STRING, T.ARRAY) or kv.vtype in NUMPY
        if kv.vtype == T.STRING:
            assert isinstance(kv.value, str)
        elif kv.vtype == T.ARRAY:
            assert isinstance(kv.value, (np.ndarray, list))
    names = [t.name for t in f.tensors]
    assert len(set(names)) == len(names)
    spans = []
    for t in f.tensors:
        block, type_size, *row_meta = sizes(t.type_id)
        assert 1 <= len(t.shape) <= 4 and min(t.shape) >= 1 and t.shape[0] % block == 0
        assert t.n_elements < 2**63
        assert t.n_bytes == t.n_elements // block * type_size + t.n_rows * sum(row_meta) > 0
        assert f.data_offset <= t.offset and t.offset + t.n_bytes <= size, (t, size)
        assert t.offset % f.alignment == f.data_offset % f.alignment
        assert f.tensor_data(t).nbytes == t.n_bytes
        rows = f.rows(t, 0, t.n_rows)
        assert rows.shape == (t.n_rows, f.row_bytes(t)) and rows.nbytes == t.n_bytes
        int(np.bitwise_xor.reduce(rows, axis=None))  # touch every byte (a read past the map would fault)
        spans.append((t.offset, t.offset + t.n_bytes))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "overlapping tensors"


def check_imatrix(im: Imatrix) -> None:
    assert im.entries
    for name, values in im.entries.items():
        assert isinstance(name, str)
        assert isinstance(values, np.ndarray) and values.dtype == np.float32 and values.ndim == 1 and values.size
        assert np.isfinite(values).all()
    assert isinstance(im.datasets, list) and all(isinstance(d, str) for d in im.datasets)
    assert isinstance(im.chunk_count, int) and isinstance(im.chunk_size, int)


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.unlink(missing_ok=True)  # a new file: truncating one in place costs milliseconds
    path.write_bytes(data)
    return path


def run_one(seed: Seed, data: bytes, folder: Path, which: int = 0) -> str:
    """Read ``data`` as ``seed`` is read; "ok" or "error" (a QfError of the right kind), else an exception.

    ``which`` (split seeds): 0 mutates the first split, 1 the second."""
    if seed.kind == "gguf":
        path = write(folder, "m.gguf", data)
        try:
            f = GGUFFile.open(path, registry_sizes())
        except GGUFFormatError as exc:
            check_error(exc, path)
            return "error"
        check_gguf(f, len(data), registry_sizes())
        return "ok"
    if seed.kind == "split":
        first = write(folder, "s-00001-of-00002.gguf", data if which == 0 else seed.data)
        second = write(folder, "s-00002-of-00002.gguf", seed.companion if which == 0 else data)
        try:
            src = TensorSource.open(first, registry_sizes())
        except GGUFFormatError as exc:
            check_error(exc, first if which == 0 or "00001" in str(exc) else second)
            return "error"
        for i, f in enumerate(src.files):
            check_gguf(f, f.path.stat().st_size, registry_sizes())
            assert all(t.file_index == i for t in f.tensors)
        assert len({t.name for t in src.tensors}) == len(src.tensors)
        for t in src.tensors:
            assert src.tensor_data(t).nbytes == t.n_bytes
        return "ok"
    path = write(folder, "im.gguf" if seed.name.endswith("gguf") else "im.dat", data)
    try:
        im = Imatrix.load(path)
    except ImatrixError as exc:
        check_error(exc, path)
        return "error"
    check_imatrix(im)
    return "ok"


def run_bounded(seed: Seed, data: bytes, folder: Path, which: int = 0, trace: bool = True) -> str:
    """:func:`run_one`, timed, and with ``trace`` its allocations traced: the peak must stay in proportion to the
    file.  (Tracing slows reading fivefold, so callers trace a share of their inputs, and cap the address space
    for all: :func:`limit_memory`.)"""
    registry_sizes()  # built once, outside the measurement
    if trace:
        tracemalloc.start()
    try:
        start = time.perf_counter()
        result = run_one(seed, data, folder, which)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
    finally:
        if trace:
            tracemalloc.stop()
    limit = MEMORY_BASE + MEMORY_PER_BYTE * (len(data) + len(seed.companion or b""))
    assert peak <= limit, f"allocated {peak} bytes reading a {len(data)}-byte file"
    assert elapsed < TIME_LIMIT_S * 4, f"took {elapsed:.1f} s"
    return result


# ------------------------------------------------------------------------------------------------------------------
# the sweep: every field of every seed set to each extreme value, in a subprocess whose address space is capped
# ------------------------------------------------------------------------------------------------------------------

def sweep_cases(values: Sequence = SWEEP_VALUES) -> Iterator[tuple[Seed, tuple]]:
    for seed in SEEDS:
        for i, value in itertools.product(range(len(seed.fields)), values):
            yield seed, ("field", i, value)
        for cut in range(0, len(seed.data), max(1, len(seed.data) // 97)):
            yield seed, ("truncate", cut)


def limit_memory(extra_bytes: int) -> tuple[int, int]:
    """Cap this process's address space (the soft limit) at what it uses now plus ``extra_bytes``: an allocation
    beyond fails with MemoryError, which the checks report.  Returns the limits to restore."""
    import resource

    with open("/proc/self/status") as fh:
        vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    old = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm + extra_bytes if old[1] == resource.RLIM_INFINITY else min(vm + extra_bytes, old[1])
    resource.setrlimit(resource.RLIMIT_AS, (cap, old[1]))
    return old


def restore_memory(old: tuple[int, int]) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, old)


def sweep_main(values: Sequence = SWEEP_VALUES, extra_mib: int = 256) -> dict:
    """Run the sweep under a memory cap; returns counts and failures (the subprocess prints it as JSON)."""
    registry_sizes()  # the registry is built before the cap
    limit_memory(extra_mib << 20)
    counts = {"ok": 0, "error": 0}
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed, mutation in sweep_cases(values):
            data = apply(seed.data, [mutation], seed.fields)
            start = time.perf_counter()
            try:
                counts[run_one(seed, data, Path(tmp))] += 1
            except BaseException as exc:  # noqa: B036 (MemoryError, RecursionError: all are findings)
                failures.append([seed.name, repr(mutation), f"{type(exc).__name__}: {str(exc)[:200]}"])
            if time.perf_counter() - start > TIME_LIMIT_S:
                failures.append([seed.name, repr(mutation), f"slow: {time.perf_counter() - start:.1f} s"])
    return {"counts": counts, "failures": failures}


# ------------------------------------------------------------------------------------------------------------------
# tests
# ------------------------------------------------------------------------------------------------------------------

FUZZ = settings(max_examples=200, deadline=int(TIME_LIMIT_S * 1000), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@contextlib.contextmanager
def capped():
    """The address space capped at 1 GiB more than in use (for one example)."""
    registry_sizes()
    old = limit_memory(1 << 30)
    try:
        yield
    finally:
        restore_memory(old)


TRACED = itertools.count()

def field_value():
    return st.one_of(st.sampled_from(EXTREMES), st.integers(0, 48), st.integers(0, 2**64 - 1),
                     st.sampled_from(("len", "x2", "+1", "-1", "+8", "-8", "+32")))


def mutations(seed: Seed):
    n = len(seed.data)
    pos = st.integers(0, n - 1)
    one = st.one_of(
        st.tuples(st.just("field"), st.integers(0, len(seed.fields) - 1), field_value()),
        st.tuples(st.just("field"), st.integers(0, len(seed.fields) - 1), field_value()),
        st.tuples(st.just("truncate"), st.integers(0, n)),
        st.tuples(st.just("flip"), pos, st.integers(0, 7)),
        st.tuples(st.just("byte"), pos, st.integers(0, 255)),
        st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("delete"), pos, st.integers(1, 16)),
        st.tuples(st.just("copy"), pos, pos, st.integers(1, 64)),
    )
    return st.lists(one, min_size=1, max_size=4)


def seed_test(seed_name: str):
    seed = next(s for s in SEEDS if s.name == seed_name)

    @FUZZ
    @given(muts=mutations(seed), which=st.integers(0, 1))
    def test(folder, muts, which):
        with capped():
            run_bounded(seed, apply(seed.data, muts, seed.fields), folder, which, trace=next(TRACED) % 4 == 0)

    return test


test_mutated_model = seed_test("model")
test_mutated_aligned_model = seed_test("aligned")
test_mutated_split = seed_test("split")
test_mutated_imatrix_gguf = seed_test("imatrix-gguf")
test_mutated_imatrix_dat = seed_test("imatrix-dat")

def test_seeds_read_back(folder):
    for seed in SEEDS:
        assert run_one(seed, seed.data, folder) == "ok", seed
    f = GGUFFile.open(write(folder, "seed.gguf", SEEDS[0].data))
    assert [list(a) for a in f.get("test.nested")] == [[1, 2], [3], []]
    assert f.get("tokenizer.ggml.tokens")[2] == "bé"
    assert [t.name for t in f.tensors] == [t[0] for t in TENSORS]

# -- headers from scratch ---------------------------------------------------------------------------------------
KEYS = st.sampled_from(["a", "b", "general.alignment", "split.count", "split.no", "imatrix.datasets", "é"])
TYPE_IDS = st.one_of(st.sampled_from([0, 1, 2, 8, 12, 30, 41]), st.integers(0, 64), st.sampled_from(EXTREMES))
SMALL = st.one_of(st.integers(1, 70), st.sampled_from(EXTREMES))

@st.composite
def kv_bytes(draw) -> bytes:
    key = draw(KEYS)
    kind = draw(st.sampled_from(["scalar", "string", "array", "strings", "nested", "junk"]))
    if kind == "scalar":
        vtype, seed_value = draw(st.sampled_from(SCALARS))
        value = draw(st.sampled_from([seed_value, 0, 1, 2, 3, 32, 64]))
        try:
            return make_kv(key, vtype, value).raw
        except struct.error:
            return make_kv(key, vtype, 0).raw
    if kind == "string":
        return make_kv(key, T.STRING, draw(st.text(max_size=8))).raw
    if kind == "array":
        item = draw(st.sampled_from(list(NUMPY)))
        return make_kv(key, T.ARRAY, [0] * draw(st.integers(0, 5)), item).raw
    if kind == "strings":
        return make_kv(key, T.ARRAY, draw(st.lists(st.text(max_size=4), max_size=4)), T.STRING).raw
    if kind == "nested":
        return encode_string(key) + struct.pack("<I", T.ARRAY) + deep_array(draw(st.integers(0, 12)))
    return encode_string(key) + struct.pack("<I", draw(TYPE_IDS) & 0xFFFFFFFF) + draw(st.binary(max_size=24))


@st.composite
def gguf_headers(draw) -> bytes:
    kvs = draw(st.lists(kv_bytes(), max_size=5))
    infos = draw(st.lists(st.tuples(st.sampled_from(["t", "u", "v", "blk.0.w"]),
                                    st.lists(SMALL, min_size=0, max_size=5), TYPE_IDS,
                                    st.one_of(st.integers(0, 8).map(lambda k: 32 * k), st.sampled_from(EXTREMES),
                                              st.integers(0, 300))),
                          max_size=4))
    counts = draw(st.sampled_from([None, "kv", "tensors"]))
    bogus = draw(st.sampled_from(EXTREMES))
    return header_from_parts(draw(st.sampled_from([3, 3, 2, 1])), kvs, infos, draw(st.integers(0, 600)),
                             n_tensors=bogus if counts == "tensors" else None,
                             n_kv=bogus if counts == "kv" else None, pad_to=draw(st.sampled_from([32, 64, 1])))


@FUZZ
@given(data=gguf_headers())
def test_generated_headers(folder, data):
    trace = next(TRACED) % 4 == 0
    with capped():
        run_bounded(SEEDS[0], data, folder, trace=trace)
        run_bounded(SEEDS[3], data, folder, trace=trace)  # the same bytes as an imatrix


@FUZZ
@given(data=st.binary(max_size=200), magic=st.sampled_from([b"", b"GGUF", b"GGUF\x03\x00\x00\x00"]))
def test_arbitrary_bytes(folder, data, magic):
    trace = next(TRACED) % 4 == 0
    with capped():
        run_bounded(SEEDS[0], magic + data, folder, trace=trace)
        run_bounded(SEEDS[4], magic + data, folder, trace=trace)

# -- the reported examples, each a one-line error -------------------------------------------------------------
def _model(infos, kvs=(), data_len=512) -> bytes:
    return header_from_parts(3, [make_kv("general.architecture", T.STRING, "llama").raw, *kvs], infos, data_len)


@pytest.mark.parametrize("data,needle", [
    (_model([("w", (0, 4), 0, 0)]), "invalid shape [0, 4]"),
    (_model([("w", (2**32, 2**32), 0, 0)]), "more than a 64-bit count holds"),
    (_model([("w", (2**62, 4), 0, 0)]), "more than a 64-bit count holds"),
    (_model([("w", (2**64 - 1,), 0, 0)]), "invalid shape"),
    (_model([("w", (), 0, 0)]), "has 0 dimensions"),
    (_model([("w", (1, 1, 1, 1, 1), 0, 0)]), "has 5 dimensions"),
    (_model([], [encode_string("deep") + struct.pack("<I", T.ARRAY) + deep_array(5000)]),
     "nests arrays deeper than"),
    (_model([], [make_kv("a", T.UINT32, 1).raw, make_kv("a", T.STRING, "x").raw]), "duplicate metadata key 'a'"),
    (_model([("w", (32,), 0, 0), ("w", (8,), 0, 128)]), "duplicate tensor name 'w'"),
    (_model([("w", (32,), 0, 0), ("v", (8,), 0, 96)]), "the data of tensors 'w' and 'v' overlap"),
    (_model([("w", (8,), 0, 0), ("v", (8,), 0, 0)]), "overlap"),
    (_model([("w", (8,), 0, 16)]), "not aligned"),
    (_model([("w", (8,), 0, 2**64 - 32)]), "truncated"),
    (_model([("w", (48,), 2, 0)]), "not a multiple of its type's block size 32"),
    (_model([("w", (32,), 2**31, 0)]), "ggml type id 2147483648"),
    (_model([], [encode_string("s") + struct.pack("<IQ", T.STRING, 2**60)]), "truncated"),
    (_model([], [encode_string("a") + struct.pack("<IIQ", T.ARRAY, T.UINT64, 2**60)]), "truncated"),
    (_model([], [encode_string("a") + struct.pack("<IIQ", T.ARRAY, T.STRING, 2**61)]), "truncated"),
    (_model([], [encode_string("a") + struct.pack("<IIQ", T.ARRAY, T.ARRAY, 2**63)]), "truncated"),
    (_model([], [encode_string("a") + struct.pack("<IIQ", T.ARRAY, 99, 1)]), "unknown array item type 99"),
    (_model([], [encode_string("a") + struct.pack("<I", 13)]), "unknown value type 13"),
    (_model([], [make_kv("general.alignment", T.UINT32, 48).raw]), "invalid general.alignment 48"),
    (_model([], [make_kv("general.alignment", T.UINT64, 32).raw]), "invalid general.alignment"),
    (_model([], [make_kv("general.alignment", T.UINT32, 0).raw]), "invalid general.alignment 0"),
    (header_from_parts(3, [], [], 0, n_tensors=2**60), "corrupt GGUF header"),
    (header_from_parts(3, [], [], 0, n_kv=2**64 - 1), "corrupt GGUF header"),
    (header_from_parts(4, [], [], 0), "unsupported GGUF version 4"),
    (b"GGUF" + bytes(10), "only 14 bytes"),
    (b"PK\x03\x04" + bytes(40), "not a GGUF file"),
])
def test_reported_examples(folder, data, needle):
    path = write(folder, "r.gguf", data)
    with pytest.raises(GGUFFormatError) as info:
        GGUFFile.open(path)
    check_error(info.value, path)
    assert needle in str(info.value)


@pytest.mark.parametrize("value,needle", [
    ((T.STRING, "2"), "split.count"), ((T.FLOAT32, 2.5), "split.count"), ((T.INT32, -1), "split.count"),
    ((T.UINT64, 2**64 - 1), "split.count"), ((T.BOOL, True), "split.count"), ((T.UINT16, 0), "split.count"),
    ((T.UINT32, 1), None), ((T.INT8, 1), None),
])
def test_split_count_of_any_type(folder, value, needle):
    path = write(folder, "one.gguf", gguf_bytes(model_kvs([make_kv("split.count", *value)])))
    if needle is None:
        assert len(TensorSource.open(path).tensors) == len(TENSORS)
        return
    with pytest.raises(GGUFFormatError, match=needle) as info:
        TensorSource.open(path)
    check_error(info.value, path)


def test_split_set_mismatch(folder):
    split = SEEDS[2]
    first = write(folder, "x-00001-of-00002.gguf", split.data)
    second = write(folder, "x-00002-of-00002.gguf", split.data)  # the first split again: split.no 0
    with pytest.raises(GGUFFormatError, match="holds split.no 0 of split.count 2, expected split 1 of 2") as info:
        TensorSource.open(first)
    check_error(info.value, second)


@pytest.mark.parametrize("mutate,needle", [
    (lambda kvs: [kvs[0], *kvs[2:]], "missing imatrix metadata"),
    (lambda kvs: [kvs[0], make_kv("imatrix.datasets", T.UINT32, 7), *kvs[2:]], "imatrix.datasets"),
    (lambda kvs: [kvs[0], make_kv("imatrix.datasets", T.ARRAY, [1, 2], T.INT32), *kvs[2:]],
     "imatrix.datasets"),
    (lambda kvs: [*kvs[:2], make_kv("imatrix.chunk_count", T.STRING, "abc"), kvs[3]], "imatrix.chunk_count"),
    (lambda kvs: [*kvs[:2], make_kv("imatrix.chunk_count", T.FLOAT64, 1e300), kvs[3]], "imatrix.chunk_count"),
    (lambda kvs: [*kvs[:3], make_kv("imatrix.chunk_size", T.ARRAY, [1], T.INT32)], "imatrix.chunk_size"),
    (lambda kvs: [*kvs[:3], make_kv("imatrix.chunk_size", T.INT64, -5)], "imatrix.chunk_size"),
])
def test_imatrix_metadata_of_wrong_type(folder, mutate, needle):
    seed = GGUFFile.open(write(folder, "seed-im.gguf", SEEDS[3].data))
    tensors = [(t.name, t.shape, t.type_id, t.n_bytes) for t in seed.tensors]
    fh = io.BytesIO()
    w = GGUFStreamWriter(fh, mutate(list(seed.kvs)), [OutTensor(*t) for t in tensors])
    for t in seed.tensors:
        w.begin(t.name)
        w.write(np.asarray(seed.tensor_data(t)))
    w.close()
    path = write(folder, "bad-im.gguf", fh.getvalue())
    with pytest.raises(ImatrixError, match=needle) as info:
        Imatrix.load(path)
    check_error(info.value, path)


@pytest.mark.parametrize("data,needle", [
    (struct.pack("<i", 2**31 - 1), "entry count"),
    (struct.pack("<ii", 1, 2**31 - 1), "name length"),
    (struct.pack("<ii", 1, 1) + b"a" + struct.pack("<ii", 1, 2**31 - 1), "value count"),
    (struct.pack("<i", 2) + 2 * (struct.pack("<i", 1) + b"a" + struct.pack("<iif", 1, 1, 1.0)),
     "duplicate entry 'a'"),
    (struct.pack("<ii", 1, 1) + b"a" + struct.pack("<ii", 1, 1) + b"\0\0\x80\x3f" + b"\1\2", "chunk count"),
    (b"", "entry count"),
    (b"GGU", "neither GGUF nor"),
])
def test_legacy_imatrix_errors(folder, data, needle):
    path = write(folder, "bad.dat", data)
    with pytest.raises(ImatrixError, match=needle) as info:
        Imatrix.load(path)
    check_error(info.value, path)


def test_unreadable_files(folder):
    d = folder / "adir.gguf"
    d.mkdir(exist_ok=True)
    with pytest.raises(GGUFFormatError, match="directory"):
        GGUFFile.open(d)
    with pytest.raises(ImatrixError, match="cannot open|directory"):
        Imatrix.load(d)
    if os.geteuid() != 0:
        p = write(folder, "locked.gguf", SEEDS[0].data)
        p.chmod(0)
        try:
            with pytest.raises(GGUFFormatError, match="cannot open"):
                GGUFFile.open(p)
        finally:
            p.chmod(0o644)


def test_long_names_are_shortened_in_errors(folder):
    name = "x" * 100_000
    path = write(folder, "long.gguf", _model([(name, (32,), 0, 0), (name, (32,), 0, 128)]))
    with pytest.raises(GGUFFormatError, match="duplicate tensor name") as info:
        GGUFFile.open(path)
    check_error(info.value, path)


def test_memory_capped_sweep():
    """Every field of every seed at each extreme value, and truncations, under a 256 MiB address-space cap."""
    here = Path(__file__).resolve().parent
    code = (f"import sys, json; sys.path[:0] = [{str(here)!r}, {str(here.parent.parent / 'tests' / 'support')!r}];"
            " import test_fuzz_gguf as m; print(json.dumps(m.sweep_main()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["failures"], result["failures"][:20]
    assert result["counts"]["ok"] > 0 and result["counts"]["error"] > 1000, result["counts"]
