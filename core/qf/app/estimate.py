"""``--dry-run --estimate``: what a plan costs, and what it takes on N workers of C cores.

Kernel throughput is measured here, on the fly, for each distinct (input type, output type, strategy, row length,
imatrix) of the plan: a few rows of random weights are decoded and quantized exactly as a work unit would be (after a
warm-up call, so numba's compilation does not count), timed in CPU seconds of this process (not wall time: a busy
machine does not inflate it).  The CPU-seconds of each tensor group are its elements over that throughput.

The wall time on N workers of C cores is the largest of three pipelined stages (the executors overlap them):

* compute: CPU-seconds / (N × C) (units are slabs of rows, so every core has work while there are many units);
* input: the input bytes over the workers' read bandwidth (N × per-worker, capped by the storage's aggregate);
* client: the output bytes over the client's bandwidth (every quantized byte comes back to the one client, which
  writes the file in order).

The bandwidths are assumptions (:class:`Cluster`), printed with the table.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

import attrs
import numpy as np

from qf.plan import Plan, PlanEntry
from qf.values import DEFAULT_TARGET

GB = 1000 ** 3


@attrs.frozen
class Cluster:
    workers: int
    cores: int
    #: bytes/s one worker reads its input at (local NVMe, or its share of a network file system)
    worker_read: float = 1.5 * GB
    #: bytes/s the input storage serves to all workers together
    storage_read: float = 20 * GB
    #: bytes/s the client receives and writes the output at (its NIC and its disk; ~25 GbE)
    client_write: float = 2.0 * GB


@attrs.frozen
class Group:
    name: str
    dst: str
    strategy: str
    tensors: int
    elements: int
    bytes_in: int
    bytes_out: int
    cpu_seconds: float


@attrs.frozen
class Stage:
    compute: float
    input: float
    client: float

    @property
    def wall(self) -> float:
        return max(self.compute, self.input, self.client)

    @property
    def bound(self) -> str:
        return max((self.compute, "compute"), (self.input, "input read"), (self.client, "client write"))[1]


_CACHE: dict = {}


def throughput(entry: PlanEntry, target: str = DEFAULT_TARGET, min_cpu: float = 0.05) -> float:
    """Elements per CPU-second for quantizing ``entry``'s rows (0 cost for a copied tensor: infinite)."""
    if entry.copy:
        return float("inf")
    from qf.api import quantize_checked
    from qf.plugins import get_registry

    t = entry.source
    n = t.n_per_row
    key = (t.type_id, entry.dst.name, entry.strategy, n, entry.imatrix is not None, target)
    if key in _CACHE:
        return _CACHE[key]
    registry = get_registry()
    strategy = registry.strategy(entry.strategy) if entry.strategy else registry.native_strategy()
    src = registry.quant_type_by_id(t.type_id, target).load_codec()
    rng = np.random.default_rng(0)
    imatrix = None if entry.imatrix is None else rng.uniform(0.1, 2.0, n).astype(np.float32)

    def run(rows: int) -> float:
        x = (rng.standard_normal((rows, n)) * 0.02).astype(np.float32)
        try:
            raw = src.quantize_native(x, None)
        except Exception:  # noqa: BLE001 - a source type we cannot encode: time the quantization alone
            raw = None
        start = time.process_time()
        if raw is not None:
            x = np.ascontiguousarray(src.dequantize(raw, n), np.float32)
        quantize_checked(entry.dst, strategy, x, imatrix)
        return time.process_time() - start

    run(1)  # compile
    rows = 1
    while True:
        cpu = run(rows)
        if cpu >= min_cpu or rows >= 4096:
            break
        rows *= 4 if cpu < min_cpu / 8 else 2
    _CACHE[key] = rows * n / max(cpu, 1e-9)
    return _CACHE[key]


def group_name(name: str) -> str:
    return re.sub(r"^blk\.\d+\.", "blk.*.", name)


def groups(plan: Plan, target: str | None = None) -> list[Group]:
    """CPU-seconds per tensor group (name with the layer number wildcarded, output type, strategy), plan order."""
    target = target or plan.options.target or DEFAULT_TARGET
    out: dict = {}
    for e in plan.entries:
        key = (group_name(e.name), e.dst_label, e.strategy or "copy")
        cpu = 0.0 if e.copy else e.source.n_elements / throughput(e, target)
        g = out.get(key)
        out[key] = Group(key[0], key[1], key[2], 1, e.source.n_elements, e.n_bytes_in, e.n_bytes_out, cpu) \
            if g is None else attrs.evolve(g, tensors=g.tensors + 1, elements=g.elements + e.source.n_elements,
                                           bytes_in=g.bytes_in + e.n_bytes_in, bytes_out=g.bytes_out + e.n_bytes_out,
                                           cpu_seconds=g.cpu_seconds + cpu)
    return list(out.values())


def stages(plan: Plan, gs: Sequence[Group], cluster: Cluster) -> Stage:
    cpu = sum(g.cpu_seconds for g in gs)
    read = min(cluster.workers * cluster.worker_read, cluster.storage_read)
    return Stage(cpu / (cluster.workers * cluster.cores), plan.bytes_in / read, plan.bytes_out / cluster.client_write)


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def estimate_report(plan: Plan, workers: Sequence[int] = (1, 8, 64), cores: int | None = None,
                    cluster: Cluster | None = None) -> str:
    from qf.execute import default_threads

    cores = cores or default_threads()
    base = cluster or Cluster(1, cores)
    gs = groups(plan)
    lines = ["estimate (kernel throughput measured on this machine, CPU-seconds per tensor group):",
             f"  {'group':<34s} {'type':>8s} {'strategy':>10s} {'tensors':>7s} {'GB in':>8s} {'GB out':>8s}"
             f" {'CPU-s':>10s}"]
    for g in sorted(gs, key=lambda g: -g.cpu_seconds):
        lines.append(f"  {g.name:<34s} {g.dst:>8s} {g.strategy:>10s} {g.tensors:7d} {g.bytes_in / GB:8.2f}"
                     f" {g.bytes_out / GB:8.2f} {g.cpu_seconds:10.1f}")
    cpu = sum(g.cpu_seconds for g in gs)
    lines.append(f"  total: {cpu:.0f} CPU-s ({cpu / 3600:.2f} CPU-h), {plan.bytes_in / GB:.1f} GB in,"
                 f" {plan.bytes_out / GB:.1f} GB out")
    lines.append(f"  assumed: {base.worker_read / GB:g} GB/s read per worker, {base.storage_read / GB:g} GB/s storage"
                 f" in all, {base.client_write / GB:g} GB/s client write")
    for n in workers:
        st = stages(plan, gs, attrs.evolve(base, workers=n, cores=cores))
        lines.append(f"  {n:3d} worker(s) x {cores} cores: wall {hms(st.wall):>10s}  (compute {hms(st.compute)},"
                     f" input {hms(st.input)}, client {hms(st.client)}; bound: {st.bound})")
    return "\n".join(lines)
