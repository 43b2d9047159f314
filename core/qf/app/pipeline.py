"""``quantize_file``: open, plan, execute — the whole of ``qf quantize`` as a function."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from qf.app.aliases import find_model
from qf.errors import UsageError
from qf.execute import Executor, default_threads
from qf.gguf_io import atomic_output
from qf.gguf_io.source import TensorSource, split_path
from qf.options import QuantizeOptions, resolve
from qf.plan import Plan, PlanEntry, plan_quantization
from qf.plugins import get_registry

MiB = 1024 * 1024


def _same_file(a: Path, b: Path) -> bool:
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


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
    if len(plan.files) == 1:
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
    return plan_quantization(registry, opts, source), source


def quantize_file(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    ftype: str | None,
    *,
    threads: int | None = None,
    dry_run: bool = False,
    quiet: bool = True,
    progress: bool = False,
    **options,
) -> Plan:
    """Quantize a GGUF model file like ``llama-quantize`` (see ``qf quantize --help`` for the options).

    Returns the plan that was carried out.  Nothing is written for ``dry_run``; otherwise the output appears only
    when complete (written to temporary files and renamed at the end)."""
    input = find_model(input)
    same = output is not None and (_same_file(input, Path(output)) or Path(output).resolve() == input.resolve())
    if same and not dry_run:
        raise UsageError(f"input and output files are the same: '{input}'")
    plan, source = make_plan(input, ftype, dry_run=dry_run, **options)
    bar = None

    def say(msg: str) -> None:
        if not quiet:
            (bar.write(msg, file=sys.stderr) if bar is not None else print(msg, file=sys.stderr))

    for warning in plan.warnings:
        say(f"warning: {warning}")
    for note in plan.notes:
        say(note)
    if dry_run:
        return plan
    if output is None:
        raise UsageError("no output file given")
    threads = threads or default_threads()
    if progress and not quiet:
        from tqdm import tqdm

        bar = tqdm(total=plan.bytes_in, unit="B", unit_scale=True, unit_divisor=1024, desc="quantizing",
                   file=sys.stderr, leave=False, dynamic_ncols=True)
    n_total = len(plan.entries)
    start = time.perf_counter()
    executor = Executor(plan, source, threads, on_tensor=lambda e: say(describe(e, n_total)),
                        on_progress=(bar.update if bar is not None else None))
    paths = output_paths(output, plan)
    try:
        with ExitStack() as stack:
            handles = [stack.enter_context(atomic_output(p)) for p in paths]
            executor.run(handles)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - start
    say(summary(plan))
    say(f"quantize time = {elapsed * 1000:8.2f} ms ({threads} threads)")
    return plan


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
