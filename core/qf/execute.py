"""Carrying out a plan: work units, what a worker does with one, and the in-order writer every executor shares.

A plan's tensors are cut into **work units** — slabs of rows of one tensor (of one expert's matrix for 3-D tensors),
or a range of bytes of a tensor copied as it is.  :func:`run_unit` turns a unit into its output bytes; it needs only
the plan entry, the unit and a :class:`qf.gguf_io.TensorSource` (any process that can open the input can run it).
An executor (a plugin, see :class:`Executor`) decides where units run; :class:`OrderedWriter` writes their results in
plan order, so the output bytes never depend on the executor, its thread or worker count, or completion order.
Memory stays bounded: an executor keeps a fixed number of units in flight.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import BinaryIO

import attrs
import numpy as np

from qf.api import check_scales, quantize_checked
from qf.errors import InvalidWeightsError, check_interrupted
from qf.gguf_io import GGUFStreamWriter
from qf.plan import Plan, PlanEntry
from qf.plugins import get_registry
from qf.values import DEFAULT_TARGET

#: float32 bytes of one work unit (a slab of rows); an executor keeps a few per worker in flight
UNIT_BYTES = int(os.environ.get("QF_UNIT_BYTES", 16 << 20))


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@attrs.frozen
class WorkUnit:
    """Rows ``[row0, row1)`` of plan entry ``entry`` (rows counted across all higher dimensions; ``mat`` is the
    expert matrix they belong to), or for a copied tensor the byte range ``[row0, row1)``."""

    entry: int
    mat: int
    row0: int
    row1: int
    last: bool  # the tensor's last unit


def work_units(plan: Plan, unit_bytes: int = UNIT_BYTES) -> Iterator[WorkUnit]:
    """Every unit of the plan, in output order."""
    for entry in plan.entries:
        t = entry.source
        if entry.copy:
            starts = range(0, t.n_bytes, unit_bytes)
            for i, start in enumerate(starts):
                yield WorkUnit(entry.index, 0, start, min(t.n_bytes, start + unit_bytes), i == len(starts) - 1)
            continue
        rows_per_mat = t.shape[1] if len(t.shape) > 1 else 1
        n_mat = t.n_rows // rows_per_mat
        group = entry.dst.row_group if entry.dst is not None else 1
        step = max(1, min(rows_per_mat, unit_bytes // (4 * t.n_per_row)))
        if step < rows_per_mat:
            step = max(group, step // group * group)
        for mat in range(n_mat):
            for r0 in range(0, rows_per_mat, step):
                r1 = min(rows_per_mat, r0 + step)
                base = mat * rows_per_mat
                yield WorkUnit(entry.index, mat, base + r0, base + r1, mat == n_mat - 1 and r1 == rows_per_mat)


def unit_input_bytes(entry: PlanEntry, unit: WorkUnit) -> int:
    """Input bytes a unit reads (for progress)."""
    if entry.copy:
        return unit.row1 - unit.row0
    return (unit.row1 - unit.row0) * (entry.source.n_bytes // entry.source.n_rows)


def decode_rows(type_id: int, raw: np.ndarray, n_per_row: int, target: str = DEFAULT_TARGET) -> np.ndarray:
    """Source rows stored as GGUF type ``type_id``, decoded to the C-contiguous float32 the codecs quantize."""
    codec = get_registry().quant_type_by_id(type_id, target).load_codec()
    return np.ascontiguousarray(codec.dequantize(raw, n_per_row), np.float32)


def run_unit(entry: PlanEntry, unit: WorkUnit, source, target: str = DEFAULT_TARGET) -> np.ndarray:
    """A unit's output bytes: the tensor's rows decoded to float32 and quantized as the entry says (or its raw bytes
    for a copy).  Errors name the tensor, the row and, for experts, the expert."""
    t = entry.source
    if entry.copy:
        return np.asarray(source.tensor_data(t)[unit.row0:unit.row1])
    registry = get_registry()
    strategy = registry.strategy(entry.strategy) if entry.strategy else registry.native_strategy()
    rows_per_mat = t.shape[1] if len(t.shape) > 1 else 1
    n_mat = t.n_rows // rows_per_mat

    def where(row: int) -> str:
        text = f"row {row % rows_per_mat}"
        return text + (f" of expert {row // rows_per_mat}" if n_mat > 1 else "")

    raw = source.rows(t, unit.row0, unit.row1)
    x = decode_rows(t.type_id, raw, t.n_per_row, target)
    imatrix = None if entry.imatrix is None else np.ascontiguousarray(entry.imatrix[unit.mat], np.float32)
    try:
        out, amax = quantize_checked(entry.dst, strategy, x, imatrix)
        check_scales(entry.dst, x, out, amax, lambda row: where(unit.row0 + row), imatrix)
    except InvalidWeightsError as exc:
        row = getattr(exc, "row", None)
        if row is not None:  # a non-finite value: name the tensor's row, not the unit's
            raise InvalidWeightsError(f"tensor {t.name!r}: non-finite weight {x[row, exc.column]} at"
                                      f" {where(unit.row0 + row)}, column {exc.column}") from None
        raise InvalidWeightsError(f"tensor {t.name!r}: {exc}") from None
    return out


class OrderedWriter:
    """Writes unit results in plan order into the open output files (``outputs[i]`` for ``plan.files[i]``)."""

    def __init__(self, plan: Plan, outputs: Sequence[BinaryIO], on_tensor: Callable[[PlanEntry], None]) -> None:
        self.plan = plan
        self.on_tensor = on_tensor
        self._file_of = {e.index: i for i, f in enumerate(plan.files) for e in f.entries}
        self._writers = [GGUFStreamWriter(fh, list(f.kvs), [e.out_tensor() for e in f.entries], plan.alignment)
                         for f, fh in zip(plan.files, outputs)]
        self._current: int | None = None

    def write(self, unit: WorkUnit, data: np.ndarray) -> None:
        writer = self._writers[self._file_of[unit.entry]]
        if unit.entry != self._current:
            writer.begin(self.plan.entries[unit.entry].name)
            self._current = unit.entry
        writer.write(data)
        if unit.last:
            self.on_tensor(self.plan.entries[unit.entry])

    def close(self) -> None:
        for writer in self._writers:
            writer.close()


class Executor:
    """Where work units run.  An executor plugin registers a subclass (``qf.ExecutorSpec``); the app builds it with
    ``threads`` (per worker) and its own options, then calls :meth:`run` once."""

    name = "?"

    def __init__(self, threads: int | None = None, **options) -> None:
        self.threads = threads or default_threads()

    def describe(self) -> str:
        """One line for ``--dry-run``: the executor and its workers."""
        return f"{self.name}: {self.threads} threads"

    def results(self, plan: Plan, source, units: Iterable[WorkUnit]) -> Iterator[tuple[WorkUnit, np.ndarray]]:
        """Each unit with its output bytes, in the order given."""
        raise NotImplementedError

    def run(self, plan: Plan, source, outputs: Sequence[BinaryIO], on_tensor: Callable[[PlanEntry], None] = None,
            on_progress: Callable[[int], None] = None) -> None:
        on_tensor = on_tensor or (lambda entry: None)
        on_progress = on_progress or (lambda n: None)
        writer = OrderedWriter(plan, outputs, on_tensor)
        released = -1
        for unit, data in self.results(plan, source, work_units(plan)):
            check_interrupted()
            writer.write(unit, data)
            entry = plan.entries[unit.entry]
            on_progress(unit_input_bytes(entry, unit))
            if unit.last and unit.entry > released:
                source.release(entry.source)
                released = unit.entry
        writer.close()
