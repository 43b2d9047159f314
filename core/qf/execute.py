"""The executor: carries out a plan tensor by tensor, streaming rows through the quant kernels.

At most one slab of rows (``slab_bytes`` of float32) per tensor is in memory at a time, so peak memory does not grow
with model size.  A slab is cut into chunks that worker threads quantize in parallel (numba kernels release the
GIL); chunks are written back in order, so the output does not depend on the thread count.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from qf.api import check_scales, quantize_checked
from qf.errors import InvalidWeightsError
from qf.gguf_io import GGUFStreamWriter
from qf.plan import Plan, PlanEntry
from qf.plugins import get_registry
from qf.values import DEFAULT_TARGET

SLAB_BYTES = int(os.environ.get("QF_SLAB_BYTES", 64 << 20))  # float32 bytes converted per slab
COPY_BYTES = SLAB_BYTES


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def to_float32(src_type_id: int, raw: np.ndarray, n_per_row: int, target: str = DEFAULT_TARGET) -> np.ndarray:
    """Rows of any readable type as float32 ``(rows, n_per_row)`` (F32 rows as a view)."""
    qtype = get_registry().quant_type_by_id(src_type_id, target)
    return qtype.load_codec().dequantize(raw, n_per_row)


class Executor:
    def __init__(self, plan: Plan, source, threads: int | None = None,
                 on_tensor: Callable[[PlanEntry], None] | None = None,
                 on_progress: Callable[[int], None] | None = None) -> None:
        self.plan = plan
        self.source = source
        self.threads = threads or default_threads()
        self.on_tensor = on_tensor or (lambda entry: None)
        self.on_progress = on_progress or (lambda n: None)
        registry = get_registry()
        self.strategies = {name: registry.strategy(name) for name in {e.strategy for e in plan.entries} if name}
        self.native = registry.native_strategy()
        self.target = plan.options.target or DEFAULT_TARGET

    def run(self, outputs) -> None:
        """Write every output file; ``outputs[i]`` is the open file for ``plan.files[i]``."""
        pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="qf")
        try:
            for out_file, fh in zip(self.plan.files, outputs):
                writer = GGUFStreamWriter(fh, list(out_file.kvs), [e.out_tensor() for e in out_file.entries],
                                          self.plan.alignment)
                for entry in out_file.entries:
                    writer.begin(entry.name)
                    if entry.copy:
                        self._copy(entry, writer)
                    else:
                        self._quantize(entry, writer, pool)
                    self.source.release(entry.source)
                    self.on_tensor(entry)
                writer.close()
        finally:  # on an error or a signal, queued chunks are dropped: only those already running finish
            pool.shutdown(wait=True, cancel_futures=True)

    def _copy(self, entry: PlanEntry, writer: GGUFStreamWriter) -> None:
        data = self.source.tensor_data(entry.source)
        for start in range(0, data.size, COPY_BYTES):
            writer.write(data[start:start + COPY_BYTES])
            self.on_progress(min(COPY_BYTES, data.size - start))

    def _quantize(self, entry: PlanEntry, writer: GGUFStreamWriter, pool: ThreadPoolExecutor) -> None:
        t = entry.source
        n_per_row = t.n_per_row
        rows_per_mat = t.shape[1] if len(t.shape) > 1 else 1
        n_mat = t.n_rows // rows_per_mat
        src_row_bytes = self.source.row_bytes(t)
        strategy = self.strategies.get(entry.strategy) or self.native
        slab_rows = max(1, min(rows_per_mat, SLAB_BYTES // (4 * n_per_row)))
        chunk_rows = max(1, -(-slab_rows // (4 * self.threads)))

        def work(row0: int, row1: int, imatrix: np.ndarray | None) -> np.ndarray:
            x = to_float32(t.type_id, self.source.rows(t, row0, row1), n_per_row, self.target)
            x = np.ascontiguousarray(x, np.float32)
            try:
                out, amax = quantize_checked(entry.dst, strategy, x, imatrix)
                check_scales(entry.dst, x, out, amax, lambda row: where(row0 + row))
            except InvalidWeightsError as exc:
                row = getattr(exc, "row", None)
                if row is not None:  # a non-finite value: name the tensor's row, not the chunk's
                    raise InvalidWeightsError(f"tensor {t.name!r}: non-finite weight {x[row, exc.column]} at"
                                              f" {where(row0 + row)}, column {exc.column}") from None
                raise InvalidWeightsError(f"tensor {t.name!r}: {exc}") from None
            return out

        def where(row: int) -> str:
            text = f"row {row % rows_per_mat}"
            return text + (f" of expert {row // rows_per_mat}" if n_mat > 1 else "")

        for mat in range(n_mat):
            imatrix = None if entry.imatrix is None else np.ascontiguousarray(entry.imatrix[mat], np.float32)
            base = mat * rows_per_mat
            for s0 in range(0, rows_per_mat, slab_rows):
                s1 = min(rows_per_mat, s0 + slab_rows)
                bounds = [(a, min(s1, a + chunk_rows)) for a in range(s0, s1, chunk_rows)]
                if self.threads == 1 or len(bounds) == 1:
                    results = [work(base + a, base + b, imatrix) for a, b in bounds]
                else:
                    futures = [pool.submit(work, base + a, base + b, imatrix) for a, b in bounds]
                    results = [f.result() for f in futures]
                for out in results:
                    writer.write(out)
                self.on_progress((s1 - s0) * src_row_bytes)


def log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)
