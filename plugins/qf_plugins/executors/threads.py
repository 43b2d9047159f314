"""``threads``: work units on a pool of threads in this process (numba kernels release the GIL).

Units are submitted in plan order and a fixed window of them is in flight — across tensor boundaries, so small
tensors overlap each other and the in-order writer while the next ones are read, converted and quantized."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

from qf import ExecutorSpec, hookimpl
from qf.execute import Executor, run_unit
from qf.values import DEFAULT_TARGET

#: units in flight per thread.  Results are written in plan order, so a thread that finishes early moves on only while
#: the window has room: units of different tensors cost up to 50x apart (a K-quant beside its Q8_0 fallback), and at 2
#: per thread the threads of a 2-thread run idled 30% of the time waiting on the slowest unit at the window's head
#: (Gemma 3 270M to Q6_K: 1.75-2.1 s; 8: 1.53 s).  Memory stays bounded: only ``threads`` units run at once (each
#: holding its float32 rows, at most UNIT_BYTES), and a finished unit waiting for its turn holds only its output bytes.
WINDOW_PER_THREAD = 8


class ThreadsExecutor(Executor):
    name = "threads"

    def results(self, plan, source, units):
        target = plan.options.target or DEFAULT_TARGET
        if self.threads == 1:
            for unit in units:
                yield unit, run_unit(plan.entries[unit.entry], unit, source, target)
            return
        pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="qf")
        pending: deque = deque()
        try:
            for unit in units:
                pending.append((unit, pool.submit(run_unit, plan.entries[unit.entry], unit, source, target)))
                if len(pending) >= WINDOW_PER_THREAD * self.threads:
                    done, future = pending.popleft()
                    yield done, future.result()
            while pending:
                done, future = pending.popleft()
                yield done, future.result()
        finally:  # on an error or a signal, queued units are dropped: only those already running finish
            pool.shutdown(wait=True, cancel_futures=True)


THREADS = ExecutorSpec("threads", runner=f"{__name__}:ThreadsExecutor", default=True,
                       description="a pool of threads in this process (the default)")


@hookimpl
def qf_register_executors(registrar):
    registrar.add_executor(THREADS)
