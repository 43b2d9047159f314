"""A long fuzz run of qf's input readers (minutes; the CI tests run the same properties briefly):

    python benchmarks/fuzz_gguf.py [--minutes 5] [--seed N] [--save DIR] [--trace-every 8] [--memory-mib 1024]

* ``mutate``: the seed files of ``tests/core/test_fuzz_gguf.py`` (a model with KVs of every type, nested arrays and
  F32/F16/Q4_0/Q8_0/BF16 tensors; the same with general.alignment 64; a two-file split set; a GGUF and a legacy .dat
  imatrix), each with 1-4 random mutations (every length, count, type id, dimension and offset field overwritten
  with extreme values, truncation, bit flips, inserted/deleted/copied bytes), read with ``GGUFFile.open``,
  ``TensorSource.open`` or ``Imatrix.load``; first a deterministic sweep of every field at every extreme value;
* ``headers``/``bytes``: GGUF headers generated from scratch, and arbitrary bytes (hypothesis);
* ``override``, ``tensor-type``, ``type-file``, ``recipe``, ``cli``: the properties of
  ``tests/core/test_fuzz_parsing.py`` (``--override-kv``, ``--tensor-type``, tensor-type files, recipes, and
  ``qf quantize --dry-run`` with random options), driven by hypothesis in batches.

Every input must read correctly (tensor bytes inside the file) or raise the format's one-line QfError, within
2 s, allocating (traced every ``--trace-every``-th input) at most ~40 bytes per input byte, under an address-space
cap.  Prints the inputs tried per job and every distinct failure (exception type and the qf line that raised it);
exits 1 if there were any.  With ``--save DIR`` failing inputs are written there.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests" / "core"), str(HERE.parent / "tests" / "support")]

import test_fuzz_gguf as G  # noqa: E402
import test_fuzz_parsing as P  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


class Failures:
    """Distinct failures: (job, exception type, the innermost qf frame); the first input of each kept."""

    def __init__(self, save: Path | None) -> None:
        self.seen: dict[tuple, dict] = {}
        self.total = 0
        self.save = save

    def add(self, job: str, exc: BaseException, data: bytes | None = None, detail: str = "") -> None:
        self.total += 1
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/qf/" in f.filename or "/qf_" in f.filename]
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "(test)"
        key = (job, type(exc).__name__, where)
        if key in self.seen:
            self.seen[key]["count"] += 1
            return
        notes = " ".join(getattr(exc, "__notes__", []))
        self.seen[key] = {"job": job, "error": f"{type(exc).__name__}: {str(exc)[:300]}", "where": where,
                          "input": (detail or notes)[:500], "count": 1}
        print(f"FAILURE [{job}] {type(exc).__name__} at {where}: {str(exc)[:200]}", flush=True)
        if self.save is not None:
            self.save.mkdir(parents=True, exist_ok=True)
            stem = self.save / f"{job}-{len(self.seen)}"
            if data is not None:
                stem.with_suffix(".bin").write_bytes(data)
            stem.with_suffix(".json").write_text(json.dumps(self.seen[key], indent=2))


def mutate_job(rnd: random.Random, folder: Path, failures: Failures, trace_every: int):
    """The random mutation loop: yields after each input."""
    outcomes: Counter = Counter()
    for i in itertools.count():
        seed = rnd.choice(G.SEEDS)
        muts = [G.random_mutation(rnd, seed) for _ in range(rnd.choice((1, 1, 2, 3, 4)))]
        data = G.apply(seed.data, muts, seed.fields)
        which = rnd.randrange(2)
        try:
            outcomes[G.run_bounded(seed, data, folder, which, trace=i % trace_every == 0)] += 1
        except (Exception, RecursionError, MemoryError) as exc:
            outcomes["failure"] += 1
            failures.add("mutate", exc, data, f"seed={seed.name} which={which} mutations={muts!r}")
        yield outcomes


def sweep(folder: Path, failures: Failures) -> int:
    values = (*G.EXTREMES, "len", "x2", "+1", "-1", "+8", "-8")
    n = 0
    for seed, mutation in G.sweep_cases(values):
        data = G.apply(seed.data, [mutation], seed.fields)
        for which in (0, 1) if seed.kind == "split" else (0,):
            n += 1
            try:
                G.run_bounded(seed, data, folder, which, trace=False)
            except (Exception, RecursionError, MemoryError) as exc:
                failures.add("sweep", exc, data, f"seed={seed.name} which={which} mutation={mutation!r}")
    return n


def hypothesis_jobs(folder: Path, cli_files: dict) -> dict:
    """name -> (strategies, body): the properties of the test modules."""
    traced = itertools.count()

    def headers(data):
        trace = next(traced) % 8 == 0
        G.run_bounded(G.SEEDS[0], data, folder, trace=trace)
        G.run_bounded(G.SEEDS[3], data, folder, trace=trace)

    def arbitrary(data, magic):
        G.run_bounded(G.SEEDS[0], magic + data, folder, trace=False)
        G.run_bounded(G.SEEDS[4], magic + data, folder, trace=False)

    def inner(test):
        return test.hypothesis.inner_test

    return {
        "headers": ({"data": G.gguf_headers()}, headers),
        "bytes": ({"data": st.binary(max_size=400), "magic": st.sampled_from([b"", b"GGUF", b"GGUF\3\0\0\0"])},
                  arbitrary),
        "override": ({"spec": P.OVERRIDES}, lambda spec: inner(P.test_override_kv)(folder, spec)),
        "tensor-type": ({"spec": P.SPECS}, inner(P.test_tensor_type_spec)),
        "type-file": ({"content": P.TYPE_FILES}, lambda content: inner(P.test_tensor_type_file)(folder, content)),
        "recipe": ({"content": P.RECIPES, "tensor_types": st.lists(P.SPECS, max_size=2)},
                   lambda content, tensor_types: inner(P.test_recipe)(folder, content, tensor_types)),
        "cli": ({"args": P.command_lines()}, lambda args: inner(P.test_quantize_options)(cli_files, args)),
    }


def run_batch(name: str, strategies: dict, body, examples: int, failures: Failures, counts: Counter) -> None:
    @settings(max_examples=examples, deadline=int(G.TIME_LIMIT_S * 1000), database=None, derandomize=False,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(**strategies)
    def batch(**kwargs):
        counts[name] += 1
        body(**kwargs)

    try:
        batch()
    except (Exception, RecursionError, MemoryError) as exc:
        failures.add(name, exc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=None, help="for the mutation loop (default: random)")
    parser.add_argument("--save", type=Path, default=None, help="write failing inputs here")
    parser.add_argument("--trace-every", type=int, default=8, help="trace the allocations of every Nth input")
    parser.add_argument("--memory-mib", type=int, default=1024, help="address space allowed beyond the start")
    parser.add_argument("--jobs", default="mutate,headers,bytes,override,tensor-type,type-file,recipe,cli")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rnd = random.Random(seed)
    jobs = args.jobs.split(",")
    failures = Failures(args.save)
    counts: Counter = Counter()
    start = time.perf_counter()
    deadline = start + args.minutes * 60

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "cli").mkdir()
        cli_files = P.cli_files.__wrapped__(type("Factory", (), {"mktemp": lambda self, name: folder / "cli"})())
        G.registry_sizes()
        from qf.app.cli import cli  # noqa: F401  (imported before the cap)

        print(f"fuzz_gguf: {args.minutes:g} min, seed {seed}, jobs {', '.join(jobs)}", flush=True)
        G.limit_memory(args.memory_mib << 20)
        if "mutate" in jobs:
            counts["sweep"] = sweep(folder, failures)
            print(f"  sweep: {counts['sweep']} inputs (every field x {len(G.EXTREMES) + 6} values, truncations),"
                  f" {failures.total} failures, {time.perf_counter() - start:.0f} s", flush=True)
        loop = mutate_job(rnd, folder, failures, args.trace_every)
        others = hypothesis_jobs(folder, cli_files)
        others = {name: job for name, job in others.items() if name in jobs}
        names = itertools.cycle(others or [None])
        last_report = time.perf_counter()
        outcomes: Counter = Counter()
        while time.perf_counter() < deadline:
            # half the time to the mutation loop, the rest to the hypothesis properties in turn, ~10 s slices
            if "mutate" in jobs:
                slice_end = min(deadline, time.perf_counter() + (10 if others else 60))
                while time.perf_counter() < slice_end:
                    outcomes = next(loop)
                counts["mutate"] = sum(outcomes.values())
            name = next(names)
            if name is not None:
                slice_end = min(deadline, time.perf_counter() + 10 / max(1, len(others)) * 2)
                while time.perf_counter() < slice_end:
                    run_batch(name, *others[name], 25 if name == "cli" else 100, failures, counts)
            if time.perf_counter() - last_report > 60:
                last_report = time.perf_counter()
                print(f"  {time.perf_counter() - start:5.0f} s: {sum(counts.values())} inputs, {failures.total}"
                      f" failures ({len(failures.seen)} distinct)", flush=True)

    elapsed = time.perf_counter() - start
    total = sum(counts.values())
    print(f"\ninputs tried: {total} in {elapsed / 60:.1f} min ({total / elapsed:.0f}/s)")
    for name, n in counts.most_common():
        extra = f"  (read ok {outcomes['ok']}, format error {outcomes['error']})" if name == "mutate" else ""
        print(f"  {name:12s} {n:8d}{extra}")
    print(f"failures: {failures.total} ({len(failures.seen)} distinct)")
    for f in failures.seen.values():
        print(f"  [{f['job']}] x{f['count']} {f['error']}\n      at {f['where']}; input: {f['input']}")
    sys.exit(1 if failures.total else 0)


if __name__ == "__main__":
    main()
