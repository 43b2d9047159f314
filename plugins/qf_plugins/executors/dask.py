"""``dask``: work units on a Dask distributed cluster (``pip install 'qf[dask]'``).

The plan is made once, here, on the client.  Every unit becomes one task: the worker opens the input itself (the
path must be visible to every worker; each worker process opens it once and keeps it), quantizes the unit's rows
with :func:`qf.execute.run_unit` and returns the bytes; the client writes them in plan order, so the output is
byte-identical to the ``threads`` executor's.  A bounded window of units is in flight (memory: unit size × window,
on the client and across the workers).

* ``--executor-option scheduler=tcp://HOST:PORT`` (or ``--scheduler ADDR``): an existing cluster.  Without one, a
  ``LocalCluster`` of worker processes is started for the run: ``workers=N`` processes (default: one per thread),
  sharing ``--threads`` between them.
* A worker that dies mid-run: the scheduler reruns its tasks on the others (Dask's own retry; a task whose workers
  keep dying — ``distributed.scheduler.allowed-failures`` — fails the run).  The output is the same bytes.
* The scheduler lost, or no worker for ``no_worker_timeout`` seconds (default 60): a one-line
  :class:`ClusterError`; the app removes the partial output.

``distributed`` is imported only when the executor is built, so ``qf plugins`` works without it."""

from __future__ import annotations

import os
import time
from collections import deque

from qf import ExecutorSpec, hookimpl
from qf.errors import QfError, UsageError
from qf.execute import Executor, default_threads, run_unit
from qf.values import DEFAULT_TARGET

#: units in flight per worker thread: every thread busy while results travel back and the client writes them
WINDOW_PER_THREAD = 4
#: seconds between checks of the cluster's health while waiting for a result
POLL_SECONDS = 1.0


class ClusterError(QfError):
    """The cluster failed the run: scheduler lost, no workers, a task that kept killing its workers."""

    exit_code = 1


# -- on the worker ---------------------------------------------------------------------------------------------------
_SOURCES: dict = {}


def _source(path: str, target: str):
    """The input, opened once per worker process (by path and target)."""
    key = (path, target)
    source = _SOURCES.get(key)
    if source is None:
        from qf.gguf_io import TensorSource
        from qf.plugins import get_registry

        source = _SOURCES[key] = TensorSource.open(path, get_registry().type_sizes(target))
    return source


def quantize_unit(path: str, target: str, entry, unit):
    """One work unit's output bytes, computed on a worker (which drops the tensor's pages after its last unit)."""
    source = _source(path, target)
    out = run_unit(entry, unit, source, target)
    if unit.last:
        source.release(entry.source)
    return out


def _slim(entry, unit):
    """The entry and unit a task ships: only the imatrix row of the unit's expert (not every expert's)."""
    import attrs

    if entry.imatrix is None or entry.imatrix.shape[0] == 1:
        return entry, unit
    return attrs.evolve(entry, imatrix=entry.imatrix[unit.mat:unit.mat + 1]), attrs.evolve(unit, mat=0)


# -- on the client ---------------------------------------------------------------------------------------------------
def _positive_int(name: str, value) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise UsageError(f"executor dask: {name} must be a positive integer, not {value!r}")
    return number


def _seconds(name: str, value) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not seconds > 0:
        raise UsageError(f"executor dask: {name} must be a positive number of seconds, not {value!r}")
    return seconds


class DaskExecutor(Executor):
    name = "dask"

    def __init__(self, threads: int | None = None, scheduler: str | None = None, workers=None, window=None,
                 no_worker_timeout=60, threads_per_worker=None, connect_timeout=30) -> None:
        super().__init__(threads)
        self.scheduler = scheduler or None
        self.workers = _positive_int("workers", workers)
        self.window = _positive_int("window", window)
        self.threads_per_worker = _positive_int("threads_per_worker", threads_per_worker)
        self.no_worker_timeout = _seconds("no_worker_timeout", no_worker_timeout)
        self.connect_timeout = _seconds("connect_timeout", connect_timeout)
        if self.scheduler is None:
            self.workers = self.workers or max(1, self.threads // (self.threads_per_worker or 1))
            self.threads_per_worker = self.threads_per_worker or max(1, self.threads // self.workers)
        self._cluster = None
        self._client = None

    # -- the cluster ----------------------------------------------------------------------------------------------
    def describe(self) -> str:
        if self.scheduler is None:
            return (f"dask: a local cluster (started for the run) of {self.workers} worker process(es)"
                    f" x {self.threads_per_worker} thread(s)")
        try:
            client = self._connect()
            workers = client.scheduler_info(n_workers=-1)["workers"] if _takes_n_workers(client) \
                else client.scheduler_info()["workers"]
        finally:
            self._close()
        threads = sum(w.get("nthreads", 0) for w in workers.values())
        lines = [f"dask: scheduler {self.scheduler}, {len(workers)} worker(s), {threads} thread(s)"]
        lines += [f"  {addr}: {w.get('nthreads', '?')} thread(s), {w.get('memory_limit', 0) / 2**30:.1f} GiB"
                  for addr, w in sorted(workers.items())]
        return "\n".join(lines)

    def _connect(self):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise UsageError("executor dask needs the 'distributed' package: pip install 'qf[dask]'") from None
        try:
            if self.scheduler is None:
                self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=self.threads_per_worker,
                                             processes=True, dashboard_address=None, silence_logs=40)
                self._client = Client(self._cluster, set_as_default=False)
            else:
                self._client = Client(self.scheduler, set_as_default=False, timeout=self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            self._close()
            where = self.scheduler or "a local cluster"
            raise ClusterError(f"executor dask: cannot connect to {where}: {_one_line(exc)}") from None
        return self._client

    def _close(self) -> None:
        client, cluster, self._client, self._cluster = self._client, self._cluster, None, None
        for thing in (client, cluster):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - closing a broken cluster must not hide the real error
                    pass

    def _n_threads(self, client) -> int:
        info = client.scheduler_info()
        return sum(w.get("nthreads", 1) for w in info.get("workers", {}).values())

    # -- the run --------------------------------------------------------------------------------------------------
    def results(self, plan, source, units):
        target = plan.options.target or DEFAULT_TARGET
        path = os.path.abspath(os.fspath(source.path))
        client = self._connect()
        window = self.window or WINDOW_PER_THREAD * max(self._n_threads(client), default_threads(), 1)
        pending: deque = deque()
        try:
            for unit in units:
                entry, shipped = _slim(plan.entries[unit.entry], unit)
                pending.append((unit, client.submit(quantize_unit, path, target, entry, shipped, pure=False)))
                if len(pending) >= window:
                    done, future = pending.popleft()
                    yield done, self._wait(client, future)
            while pending:
                done, future = pending.popleft()
                yield done, self._wait(client, future)
        finally:
            for _unit, future in pending:
                future.cancel()
            self._close()

    def _wait(self, client, future):
        from distributed import TimeoutError as DaskTimeout

        try:
            from distributed.scheduler import KilledWorker
        except ImportError:  # pragma: no cover - moved between versions
            from distributed import KilledWorker
        from concurrent.futures import CancelledError

        no_workers_since = lost_since = None
        while True:
            try:
                return future.result(timeout=POLL_SECONDS)
            except (DaskTimeout, TimeoutError):
                pass
            except KilledWorker as exc:
                raise ClusterError(f"executor dask: a task kept killing its workers: {_one_line(exc)}") from None
            except CancelledError:
                raise ClusterError(f"executor dask: lost the scheduler ({self.scheduler or 'local cluster'})"
                                   f"; the run was cancelled") from None
            except OSError as exc:
                raise ClusterError(f"executor dask: lost the scheduler: {_one_line(exc)}") from None
            if client.status != "running":
                if lost_since is None:
                    lost_since = time.monotonic()
                if client.status != "connecting" or time.monotonic() - lost_since > self.connect_timeout:
                    raise ClusterError(f"executor dask: lost the scheduler ({self.scheduler or 'local cluster'},"
                                       f" {client.status})")
                continue
            lost_since = None
            try:
                n_workers = len(client.scheduler_info().get("workers", {}))
            except Exception as exc:  # noqa: BLE001
                raise ClusterError(f"executor dask: lost the scheduler: {_one_line(exc)}") from None
            if n_workers:
                no_workers_since = None
            elif no_workers_since is None:
                no_workers_since = time.monotonic()
            elif time.monotonic() - no_workers_since > self.no_worker_timeout:
                raise ClusterError(f"executor dask: no workers for {self.no_worker_timeout:g} s"
                                   f" (scheduler {self.scheduler or 'local cluster'})")


def _takes_n_workers(client) -> bool:
    import inspect

    return "n_workers" in inspect.signature(client.scheduler_info).parameters


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


DASK = ExecutorSpec("dask", runner=f"{__name__}:DaskExecutor",
                    description="a Dask distributed cluster (options: scheduler=ADDR, or a local one: workers=N)")


@hookimpl
def qf_register_executors(registrar):
    registrar.add_executor(DASK)
