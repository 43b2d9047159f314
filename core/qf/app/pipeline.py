"""``quantize_file``: open, plan, execute — the whole of ``qf quantize`` as a function."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from qf.app.aliases import find_model
from qf.errors import Interrupted, UsageError, pending_signals
from qf.execute import default_threads
from qf.gguf_io import TensorSource, atomic_output, check_not_inputs, check_space, output_target, split_path
from qf.options import QuantizeOptions, resolve
from qf.plan import Plan, PlanEntry, plan_quantization
from qf.plugins import get_registry

MiB = 1024 * 1024


def format_shape(shape: Sequence[int]) -> str:
    dims = list(shape) + [1] * (4 - len(shape))
    return "[" + ", ".join(f"{d:6d}" for d in dims) + "]"


def describe(entry: PlanEntry, n_total: int, dry_run: bool = False) -> str:
    """One log line per tensor, in llama-quantize's format."""
    head = (f"[{entry.index + 1:4d}/{n_total:4d}] {entry.name:<36s} - {format_shape(entry.source.shape)},"
            f" type = {entry.src_type:>6s}, ")
    if entry.copy:
        return head + f"size = {entry.n_bytes_in / MiB:8.3f} MiB"
    fallback = f" (fallback from {entry.fallback_from})" if entry.fallback_from else ""
    if dry_run:
        return head + (f"size = {entry.n_bytes_in / MiB:8.2f} MiB -> {entry.n_bytes_out / MiB:8.2f} MiB"
                       f" ({entry.dst_label}){fallback}")
    return (head + f"converting to {entry.dst_label}{fallback} .. size = {entry.n_bytes_in / MiB:8.2f} MiB -> "
            f"{entry.n_bytes_out / MiB:8.2f} MiB")


def output_paths(output: str | os.PathLike[str], plan: Plan) -> list[Path]:
    """One path, or llama-quantize's split names (PREFIX-0000N-of-0000M.gguf) with --keep-split."""
    split_set = plan.options.split_max_size is not None or plan.options.split_max_tensors is not None
    if len(plan.files) == 1 and not split_set:  # gguf-split names even a set of one file -00001-of-00001
        return [Path(output)]
    prefix = os.fspath(output)
    if ".gguf" in prefix:  # llama-quantize drops the last 5 characters when the name contains ".gguf"
        prefix = prefix[:-5]
    return [Path(split_path(prefix, f.split_no, len(plan.files))) for f in plan.files]


def make_plan(input: str | os.PathLike[str], ftype: str | None, *, source: TensorSource | None = None,
              **options) -> tuple[Plan, TensorSource]:
    """Build the plan for a quantization (nothing is read but metadata; nothing is written).

    ``options`` are :class:`qf.options.QuantizeOptions` fields (``imatrix=``, ``pure=``, ``tensor_types=["RE=T"]`` …).
    ``source`` may be given instead of opening ``input`` (anything with TensorSource's attributes)."""
    opts = resolve(QuantizeOptions.from_kwargs(ftype=ftype, **options))
    registry = get_registry()
    if source is None:
        source = TensorSource.open(find_model(input), registry.type_sizes(opts.target))
    if opts.target_size is not None or opts.target_bpw is not None:  # a size target: qf.app.target
        from qf.app.target import plan_for_target

        return plan_for_target(registry, opts, source), source
    return plan_quantization(registry, opts, source), source


def quantize_file(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    ftype: str | None,
    *,
    threads: int | None = None,
    quiet: bool = True,
    progress: bool = False,
    **options,
) -> Plan:
    """Quantize a GGUF model file like ``llama-quantize`` (see ``qf quantize --help`` for the options).

    Returns the plan that was carried out.  Nothing is written with ``dry_run=True``.  Before the first tensor, every
    output path is checked (not an input — every split, the imatrix, the recipe, the rule file —, not a directory, its
    folder writable, room for the planned bytes); the output appears only when complete, and an error, Ctrl-C,
    SIGTERM or SIGHUP leaves nothing behind."""
    input = find_model(input)
    if options.get("estimate") and not options.get("dry_run"):
        raise UsageError("--estimate goes with --dry-run")
    plan, source = make_plan(input, ftype, **options)
    opts = plan.options
    bar = None

    def say(msg: str) -> None:
        if not quiet:
            (bar.write(msg, file=sys.stderr) if bar is not None else print(msg, file=sys.stderr))

    for warning in plan.warnings:
        say(f"warning: {warning}")
    for note in plan.notes:
        say(note)
    if opts.dry_run:
        if not quiet:
            say(f"executor: {make_executor(opts, clamp_threads(threads, say)).describe()}")
        if opts.estimate and not quiet:
            from qf.app.estimate import estimate_report

            say(estimate_report(plan))
        return plan
    if output is None:
        raise UsageError("no output file given")
    paths = output_paths(output, plan)
    targets = [output_target(p) for p in paths]
    inputs = [("input", f.path) for f in source.files]
    inputs += [(what, p) for what, p in (("imatrix", opts.imatrix), ("recipe", opts.recipe),
                                         ("tensor type file", options.get("tensor_type_file"))) if p is not None]
    check_not_inputs(targets, inputs)
    if not opts.no_space_check:
        check_space(targets, [plan.file_bytes(i) for i in range(len(plan.files))])
    threads = clamp_threads(threads, say)
    if progress and not quiet:
        from tqdm import tqdm

        bar = tqdm(total=plan.bytes_in, unit="B", unit_scale=True, unit_divisor=1024, desc="quantizing",
                   file=sys.stderr, leave=False, dynamic_ncols=True)
    n_total = len(plan.entries)
    start = time.perf_counter()
    executor = make_executor(opts, threads)
    try:
        with signals_raise(), ExitStack() as stack:
            handles = [stack.enter_context(atomic_output(t)) for t in targets]
            executor.run(plan, source, handles, on_tensor=lambda e: say(describe(e, n_total)),
                         on_progress=(bar.update if bar is not None else None))
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - start
    say(summary(plan))
    say(f"quantize time = {elapsed * 1000:8.2f} ms ({threads} threads)")
    return plan


def make_executor(opts, threads: int):
    """The executor the options ask for (the registry's default without ``--executor``), built with its options."""
    name = opts.executor
    extra = {}
    if opts.scheduler:  # --scheduler ADDR: the dask executor on that cluster
        if name is not None and name.casefold() != "dask":
            raise UsageError(f"--scheduler is for the dask executor, not --executor {name}")
        name, extra["scheduler"] = "dask", opts.scheduler
    spec = get_registry().executor(name)
    for item in opts.executor_options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--executor-option: expected KEY=VALUE, got {item!r}")
        extra[key] = value
    try:
        return spec.load()(threads=threads, **extra)
    except TypeError as exc:
        raise UsageError(f"executor {spec.name!r}: {exc}") from None


#: more worker threads than this many per core only add overhead (and an OS thread each)
THREADS_PER_CORE = 4


def clamp_threads(threads: int | None, say=lambda msg: None) -> int:
    """The thread count to use: all cores by default; a request far beyond the cores is clamped, with a warning."""
    cores = default_threads()
    if threads is None:
        return cores
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise UsageError(f"threads must be a positive integer, not {threads!r}")
    limit = THREADS_PER_CORE * cores
    if threads > limit:
        say(f"warning: {threads} threads requested on {cores} cores; using {limit}")
        return limit
    return threads


@contextmanager
def signals_raise() -> Iterator[None]:
    """While writing, SIGTERM and SIGHUP raise :class:`Interrupted` and SIGINT KeyboardInterrupt, so every temporary
    file is removed on the way out.  Each signal is also recorded (``qf.errors.pending_signals``): where the handler
    runs inside llvmlite's ctypes callback (numba compiling or loading a kernel) a raise would be dropped, so there it
    only records, and the work loops raise at their next :func:`qf.errors.check_interrupted`.  Only in the main thread
    (signal handlers can be set nowhere else); a SIGINT the caller ignores (``cmd &``) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        pending_signals.append(signum)
        depth, f = 0, frame
        while f is not None and depth < 64:  # inside a ctypes callback from llvmlite: record only
            if "llvmlite" in f.f_code.co_filename:
                return
            f, depth = f.f_back, depth + 1
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Interrupted(signum)

    wanted = [signal.SIGTERM, signal.SIGHUP]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        wanted.append(signal.SIGINT)
    pending_signals.clear()
    saved = {sig: signal.signal(sig, handler) for sig in wanted}
    try:
        yield
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)
        pending_signals.clear()


def summary(plan: Plan) -> str:
    bpw_in = plan.bytes_in * 8 / max(1, plan.n_elements)
    bpw_out = plan.bytes_out * 8 / max(1, plan.n_elements)
    lines = [
        f"model size  = {plan.bytes_in / MiB:8.2f} MiB ({bpw_in:.2f} BPW)",
        f"quant size  = {plan.bytes_out / MiB:8.2f} MiB ({bpw_out:.2f} BPW)",
    ]
    if plan.n_fallback:
        lines.append(f"WARNING: {plan.n_fallback} of {len(plan.entries)} tensor(s) required fallback quantization")
    return "\n".join(lines)
