"""The distributed path's overhead: the same job with the threads executor (2 threads) and a local Dask cluster
(2 worker processes x 1 thread), same bytes checked.

    python benchmarks/bench_dask.py [--model @smollm2|PATH] [--ftype Q4_K_M] [--strategy gradient] [--repeat 3]

Two Dask figures: against a cluster started beforehand (the steady state: tasks, pickling, results over TCP, the
workers' own numba warm-up on the first run excluded by a warm-up run), and ``--executor dask`` from cold (a
LocalCluster started and closed by the run, as the CLI does).  Times are the best of ``--repeat``."""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="@smollm2")
    ap.add_argument("--ftype", default="Q4_K_M")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--strategy", default=None, help="e.g. gradient: a CPU-heavier job")
    args = ap.parse_args(argv)

    from distributed import Client, LocalCluster

    import qf

    opts = {"allow_requantize": True} | ({"strategy": args.strategy} if args.strategy else {})
    tmp = Path(tempfile.mkdtemp(prefix="bench_dask"))

    def timed(out: Path, **kw) -> float:
        best = float("inf")
        for _ in range(args.repeat):
            start = time.perf_counter()
            qf.quantize_file(args.model, out, args.ftype, **opts, **kw)
            best = min(best, time.perf_counter() - start)
        return best

    qf.quantize_file(args.model, tmp / "warm.gguf", args.ftype, threads=2, **opts)  # numba cache, page cache
    t_threads = timed(tmp / "threads.gguf", threads=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster, set_as_default=False):
        qf.quantize_file(args.model, tmp / "warm.gguf", args.ftype, scheduler=cluster.scheduler_address, **opts)
        t_warm = timed(tmp / "dask.gguf", scheduler=cluster.scheduler_address)
    t_cold = timed(tmp / "cold.gguf", executor="dask", executor_options=["workers=2"], threads=2)
    same = sha(tmp / "threads.gguf") == sha(tmp / "dask.gguf") == sha(tmp / "cold.gguf")
    size = (tmp / "threads.gguf").stat().st_size
    print(f"{args.model} -> {args.ftype} {args.strategy or ''} ({size / 2**20:.1f} MiB out), best of {args.repeat}; same bytes: {same}")
    print("| executor | wall s | vs threads |")
    print("|---|---:|---:|")
    print(f"| threads (2) | {t_threads:.2f} | - |")
    print(f"| dask, running LocalCluster (2 procs x 1 thread) | {t_warm:.2f} | {100 * (t_warm / t_threads - 1):+.0f}% |")
    print(f"| dask, cold (--executor dask: cluster started per run) | {t_cold:.2f} |"
          f" {100 * (t_cold / t_threads - 1):+.0f}% |")
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
