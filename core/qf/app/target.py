"""``--target-size`` / ``--target-bpw``: measure each free tensor's error under each candidate type, weigh it by the
tensor's sensitivity, and let :func:`qf.app.knapsack.solve` pick the mix; then plan that mix like any other.

The loss model: ``loss(t, c) = s_t * e_t(c)`` where ``e_t(c)`` is the imatrix-weighted relative squared error of
tensor ``t`` actually quantized to candidate ``c`` (with the run's strategy), ``sum_j w_j (x_j - q_j)^2 /
sum_j w_j x_j^2`` over sampled rows (all rows of small tensors), and ``s_t`` the tensor's sensitivity: a measured KL
divergence per unit of relative error from ``qf sensitivity`` (``--sensitivity``), or by default a prior: 1 for every
tensor but the output head (``output.weight``, or ``token_embd.weight`` where the model ties them), which gets
:data:`HEAD_SENSITIVITY`.  The head's error goes straight into the logits; measured on SmolLM2 (tied head, Q4_0
probe, ``qf sensitivity``) it is 115x the median tensor's, while the medians of the other kinds lie within 0.4-1.5x
of it.  Without that one prior the knapsack starves the head (the largest tensor) and at Q4_K_M's size the mix had
2.4x the preset's KLD; with it see benchmarks/bench_target.py.

A *free* tensor is one no user rule or option fixes (``--tensor-type``, recipe rules, ``--token-embedding-type``,
``--output-tensor-type``); MTP/NextN heads keep the planner's choice (the main model's loss does not see them).
"""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import numpy as np

from qf import __version__ as qf_version
from qf.app.knapsack import Candidate, Item, parse_bpw, parse_size, parse_types, solve
from qf.errors import UsageError
from qf.execute import decode_rows, default_threads
from qf.gguf_io.writer import pad
from qf.imatrix import Imatrix
from qf.kernels import cache_home, kernel_sources_digest
from qf.names import NEXTN, category, layer_of
from qf.plan import IMATRIX_EXEMPT, Plan, PlanEntry, Planner

#: the default candidate ladder (those that fit a tensor's rows are its candidates): K-quants and the legacy 32-blocks
#: (for rows that are not a multiple of 256), with an imatrix also the IQ types
LADDER = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL")
IMATRIX_LADDER = ("IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS")
DEFAULT_SAMPLE_ROWS = 128
#: by default a tensor is sampled at no more than this fraction of its rows (at least MIN_SAMPLE_ROWS): on a small
#: model 128 rows of a 192-row tensor measure two thirds of it for every candidate, which costs more than quantizing
MAX_SAMPLE_FRACTION = 1 / 8
MIN_SAMPLE_ROWS = 32
#: candidates whose search is slow (grid types): measured in a second stage, only where the first stage's choice lies
#: within STAGE_WINDOW bits per weight (below, above) of theirs
SLOW_CANDIDATES = frozenset({"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S"})
STAGE_WINDOW = (1.25, 0.25)
SEED = 0x5EED


@attrs.frozen
class Measured:
    type_name: str
    size: int  # exact bytes in the budget's terms (padded for a file size)
    error: float  # weighted relative squared error
    stderr: float  # its sampling standard error (0 when every row was used)


@attrs.frozen
class TensorChoice:
    name: str
    weight: float  # sensitivity s_t
    rows_sampled: int
    rows: int
    options: tuple[Measured, ...]
    chosen: str
    first_stage: str | None = None  # the first stage's choice, where the slow candidates were staged

    def option(self, type_name: str) -> Measured:
        return next(m for m in self.options if m.type_name == type_name)

    @property
    def loss(self) -> float:
        return self.weight * self.option(self.chosen).error


@attrs.frozen
class TargetReport:
    what: str  # "file bytes" or "tensor bytes"
    target: int  # bytes asked for (file or tensor data)
    achieved: int  # bytes planned
    budget: int  # bytes available to the free tensors
    loss: float  # predicted loss sum_t s_t e_t
    loss_stderr: float  # its sampling standard error
    sensitivity: str  # the default prior, or the file
    tensors: tuple[TensorChoice, ...]
    seconds: float  # measuring and solving

    def lines(self) -> list[str]:
        rel = (self.achieved - self.target) / self.target * 100
        return [f"target: {self.target} {self.what}; planned {self.achieved} ({rel:+.3f}%);"
                f" {len(self.tensors)} free tensors; sensitivity {self.sensitivity}",
                f"target: predicted loss {self.loss:.6g} ± {self.loss_stderr:.2g} (sampling s.e.);"
                f" chosen in {self.seconds:.1f} s"]


def ladder(registry, target: str, names: tuple[str, ...] | None, has_imatrix: bool):
    """The candidate types: ``--target-types`` (each must exist) or the default ladder (those the target has)."""
    if names is not None:
        return [registry.quant_type(n, target) for n in names]
    out = []
    for n in LADDER + (IMATRIX_LADDER if has_imatrix else ()):
        try:
            out.append(registry.quant_type(n, target))
        except UsageError:
            continue
    return out


def load_sensitivity(path: str) -> dict[str, float]:
    """A ``qf sensitivity`` file's per-tensor weights (KLD per unit of relative squared error)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        weights = {str(k): float(v) for k, v in data["weights"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"--sensitivity {path}: not a qf sensitivity file ({exc})") from None
    return weights


def _kind(name: str) -> str:
    return name.split(".")[-2] if name.startswith("blk.") else name.rsplit(".", 1)[0]


#: the default sensitivity of the output head relative to every other tensor (see the module docstring)
HEAD_SENSITIVITY = 100.0


def output_head(names) -> str | None:
    """The tensor that projects to the logits: ``output.weight``, or ``token_embd.weight`` where the model ties
    them (no ``output.weight``)."""
    names = set(names)
    return next((n for n in ("output.weight", "token_embd.weight") if n in names), None)


def sensitivity_weights(path: str | None, names: list[str],
                        all_names: list[str] | None = None) -> tuple[dict[str, float], str]:
    """Each free tensor's sensitivity: from a ``qf sensitivity`` file, or the default prior (``all_names``, every
    tensor of the model, tells whether the head is tied)."""
    if path is None:
        head = output_head(names if all_names is None else all_names)
        return ({n: HEAD_SENSITIVITY if n == head else 1.0 for n in names},
                f"prior (1; the output head {head} {HEAD_SENSITIVITY:g})" if head in names else "uniform")
    weights = load_sensitivity(path)
    by_kind: dict[str, list[float]] = {}
    for n, w in weights.items():
        by_kind.setdefault(_kind(n), []).append(w)
    out = {}
    for n in names:
        if n in weights:
            out[n] = weights[n]
        else:  # a tensor the file lacks: the median of its kind, else of all
            pool = by_kind.get(_kind(n)) or list(weights.values()) or [1.0]
            out[n] = float(np.median(pool))
    return out, os.fspath(path)


def measure_errors(source, entry: PlanEntry, types, imatrix: np.ndarray | None, strategy: str, sample_rows: int,
                   rng: np.random.Generator) -> tuple[list[tuple[float, float]], int]:
    """(error, standard error) per candidate type for one tensor, and the number of rows sampled."""
    from qf.api import dequantize_rows, quantize_rows

    t = entry.source
    n_rows, k = t.n_rows, t.n_per_row
    rows_per_mat = t.shape[1] if len(t.shape) > 1 else 1
    if sample_rows < n_rows:
        idx = np.sort(rng.choice(n_rows, sample_rows, replace=False))
    else:
        idx = np.arange(n_rows)
    raw = np.asarray(source.rows(t, 0, n_rows))[idx]
    x = decode_rows(t.type_id, raw, k)
    mats = idx // rows_per_mat
    w = np.ones_like(x) if imatrix is None else imatrix[mats]
    den = (w * x.astype(np.float64) ** 2).sum(axis=1)
    out = []
    fpc = 1.0 - len(idx) / n_rows
    for q in types:
        if q.type_id == t.type_id:
            out.append((0.0, 0.0))
            continue
        xq = np.empty_like(x)
        for m in np.unique(mats):
            sel = mats == m
            im = None if imatrix is None or not q.uses_imatrix else imatrix[m]
            data = quantize_rows(q, np.ascontiguousarray(x[sel]), im, strategy)
            xq[sel] = dequantize_rows(q, data, k)
        num = (w * (x.astype(np.float64) - xq) ** 2).sum(axis=1)
        r = num.sum() / max(den.sum(), 1e-300)
        if fpc > 0 and len(idx) > 1:
            resid = num - r * den
            se = math.sqrt(fpc * resid.var(ddof=1) / len(idx)) / max(den.mean(), 1e-300)
        else:
            se = 0.0
        out.append((float(r), float(se)))
    return out, len(idx)


def rows_to_sample(n_rows: int, sample_rows: int | None) -> int:
    """How many of a tensor's rows to measure (``n_rows`` for all): ``--target-sample-rows`` if given (0 = all), else
    DEFAULT_SAMPLE_ROWS capped at MAX_SAMPLE_FRACTION of the rows, at least MIN_SAMPLE_ROWS."""
    if sample_rows is not None:
        return n_rows if sample_rows == 0 else min(sample_rows, n_rows)
    cap = max(MIN_SAMPLE_ROWS, math.ceil(n_rows * MAX_SAMPLE_FRACTION))
    return min(DEFAULT_SAMPLE_ROWS, cap, n_rows)


class MeasureCache:
    """Measured errors kept between runs (``--target-cache``): a second ``--target-*`` run on the same model, imatrix
    and strategy — another size, another recipe — measures only what the first did not.

    One JSON file per key; the key hashes everything a measurement depends on: qf's version and kernel sources, every
    input file's identity (device, inode, size, mtime), the imatrix's and its filters, the strategy, the sampling and
    its seed.  A file that cannot be read is ignored; one that cannot be written is skipped (the run never fails for
    its cache)."""

    def __init__(self, folder: str | None, key_parts: list) -> None:
        import hashlib

        self.path = None
        self.data: dict[str, dict[str, list[float]]] = {}
        if folder == "off":
            return
        base = Path(folder) if folder else cache_home()
        digest = hashlib.sha256(json.dumps(key_parts, sort_keys=True, default=str).encode()).hexdigest()[:24]
        self.path = base / "target" / f"{digest}.json"
        try:
            data = json.loads(self.path.read_text())
            if isinstance(data, dict):
                self.data = data
        except (OSError, ValueError):
            pass

    def get(self, tensor: str, type_name: str):
        hit = self.data.get(tensor, {}).get(type_name)
        return tuple(hit) if isinstance(hit, list) and len(hit) == 3 else None

    def put(self, tensor: str, type_name: str, error: float, stderr: float, n_sampled: int) -> None:
        self.data.setdefault(tensor, {})[type_name] = [error, stderr, n_sampled]

    def save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.data))
            os.replace(tmp, self.path)
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass


def _identity(path) -> list:
    st = os.stat(path)
    return [os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def _budget(plan: Plan, opts, source, free_entries: list[PlanEntry]) -> tuple[str, int, int, bool]:
    """(what, target, budget for the free tensors, padded sizes?)"""
    if opts.target_size is not None and opts.target_bpw is not None:
        raise UsageError("--target-size and --target-bpw cannot be used together")
    free_names = {e.name for e in free_entries}
    if opts.target_size is not None:
        input_bytes = sum(os.path.getsize(f.path) for f in source.files) if hasattr(source, "files") else None
        target = parse_size(opts.target_size, input_bytes)
        total = sum(plan.file_bytes(i) for i in range(len(plan.files)))
        fixed = total - sum(pad(e.n_bytes_out, plan.alignment) for e in plan.entries if e.name in free_names)
        return "file bytes", target, target - fixed, True
    bpw = parse_bpw(opts.target_bpw)
    target = int(bpw * plan.n_elements / 8)
    fixed = plan.bytes_out - sum(e.n_bytes_out for e in plan.entries if e.name in free_names)
    return "tensor bytes", target, target - fixed, False


def plan_for_target(registry, opts, source) -> Plan:
    """The plan whose free tensors' types minimise the predicted loss within the size target."""
    start = time.perf_counter()
    imatrix = None
    if opts.imatrix is not None:
        imatrix = Imatrix.load(opts.imatrix).filtered(list(opts.include_weights), list(opts.exclude_weights))
    probe = Planner(registry, attrs.evolve(opts, dry_run=True))
    base = probe.plan(source, imatrix)
    target_name = opts.target or "ggml"
    types = ladder(registry, target_name, None if opts.target_types is None else parse_types(opts.target_types),
                   imatrix is not None and len(imatrix.entries) > 0)
    strategy = registry.strategy(opts.strategy) if opts.strategy else registry.native_strategy()
    preset = probe.preset
    free_entries, cands = [], {}
    for e in base.entries:
        if e.name not in probe.free or NEXTN.match(e.name):
            continue
        t = e.source
        n_mat = t.shape[2] if len(t.shape) > 2 else 1
        im = imatrix.lookup(t.name, e.name, t.n_per_row, n_mat) if imatrix is not None else None
        if im is not None and not im.any():
            im = None
        ok = []
        for q in types:
            if not q.is_quantized or not q.fits(t.n_per_row) or not strategy.supports(q):
                continue
            needs = (e.name not in IMATRIX_EXEMPT and (q.quantize_requires_imatrix
                                                       or q.name in preset.imatrix_required))
            if q.requires_imatrix and im is None:
                continue
            if needs and im is None and opts.on_missing_imatrix != "allow":
                continue
            ok.append(q)
        if ok:
            free_entries.append(e)
            cands[e.name] = (ok, im)
    if not free_entries:
        raise UsageError("--target-size/--target-bpw: no tensor is free to choose (every quantized tensor is fixed"
                         " by a rule or option, or no candidate type fits it)")
    what, target, budget, padded = _budget(base, opts, source, free_entries)
    weights, sens_label = sensitivity_weights(opts.sensitivity, [e.name for e in free_entries],
                                              [e.name for e in base.entries])
    if opts.target_sample_rows is not None and opts.target_sample_rows < 0:
        raise UsageError("--target-sample-rows must be >= 0")
    cache = MeasureCache(opts.target_cache, [
        qf_version, kernel_sources_digest(),
        [_identity(f.path) for f in getattr(source, "files", ())],
        _identity(opts.imatrix) if opts.imatrix is not None else None,
        sorted(opts.include_weights), sorted(opts.exclude_weights), strategy.name, target_name,
        opts.target_sample_rows, [DEFAULT_SAMPLE_ROWS, MAX_SAMPLE_FRACTION, MIN_SAMPLE_ROWS, SEED]])

    def measure(todo: dict[str, list]) -> None:
        """Measure each tensor's listed candidates into ``measured`` (the same sampled rows every time: the seed)."""
        def job(e: PlanEntry):
            rng = np.random.default_rng([SEED, e.index])
            return measure_errors(source, e, missing[e.name], cands[e.name][1], strategy.name,
                                  rows_to_sample(e.source.n_rows, opts.target_sample_rows), rng)

        def add(e: PlanEntry, q, err: float, se: float, n_sampled: int) -> None:
            ms = measured.setdefault(e.name, ([], n_sampled))[0]
            raw = e.source.n_rows * q.row_bytes(e.source.n_per_row)
            ms.append(Measured(q.name, pad(raw, base.alignment) if padded else raw, err, se))

        missing: dict[str, list] = {}
        for e in free_entries:
            done = {m.type_name for m in measured.get(e.name, ((), 0))[0]}
            for q in todo.get(e.name, ()):
                if q.name in done:
                    continue
                hit = cache.get(e.name, q.name)
                if hit is None:
                    missing.setdefault(e.name, []).append(q)
                else:
                    add(e, q, float(hit[0]), float(hit[1]), int(hit[2]))
        entries = [e for e in free_entries if missing.get(e.name)]
        if not entries:
            return
        with ThreadPoolExecutor(max_workers=default_threads(), thread_name_prefix="qf-target") as pool:
            for e, (errs, n_sampled) in zip(entries, pool.map(job, entries)):
                for q, (err, se) in zip(missing[e.name], errs):
                    add(e, q, err, se, n_sampled)
                    cache.put(e.name, q.name, err, se, n_sampled)
        cache.save()

    def knapsack() -> tuple[list[Item], object]:
        items = [Item(e.name, tuple(Candidate(m.type_name, m.size, weights[e.name] * m.error)
                                    for m in measured[e.name][0])) for e in free_entries]
        return items, solve(items, budget)

    # Staged measuring (unless --target-full-search): the slow grid searches (IQ2_*, IQ3_*: ~3/4 of the measuring
    # time) are measured only for tensors where the knapsack over the other candidates lands near their bits per
    # weight (STAGE_WINDOW) — a tensor given Q6_K will not trade down to 2 bits, one given Q3_K might.
    measured: dict[str, tuple[list[Measured], int]] = {}
    staged = not opts.target_full_search
    first = {n: [q for q in c[0] if not (staged and q.name in SLOW_CANDIDATES)] for n, c in cands.items()}
    if staged and any(not v for v in first.values()):  # a tensor only the slow types fit: measure everything
        staged, first = False, {n: c[0] for n, c in cands.items()}
    measure(first)
    if staged and sum(min(m.size for m in measured[e.name][0]) for e in free_entries) > budget:
        # too tight without the small grid types: the smallest of them everywhere, the rest by the window below
        measure({n: sorted((q for q in c[0] if q.name in SLOW_CANDIDATES), key=lambda q: q.bits_per_weight)[:1]
                 for n, c in cands.items()})
    items, solution = knapsack()
    first_choice: dict[str, str] = {}
    if staged:
        second = {}
        for e, it in zip(free_entries, items):
            chosen = registry.quant_type(it.candidates[solution.choice[e.name]].type_name, target_name)
            first_choice[e.name] = chosen.name
            lo, hi = chosen.bits_per_weight - STAGE_WINDOW[0], chosen.bits_per_weight + STAGE_WINDOW[1]
            second[e.name] = [q for q in cands[e.name][0] if q.name in SLOW_CANDIDATES
                              and lo <= q.bits_per_weight <= hi]
        measure(second)
        items, solution = knapsack()
    flag = "--target-size" if what == "file bytes" else "--target-bpw"
    assign, choices = {}, []
    var = 0.0
    for e, it in zip(free_entries, items):
        c = it.candidates[solution.choice[e.name]]
        ms, n_sampled = measured[e.name]
        m = next(m for m in ms if m.type_name == c.type_name)
        var += (weights[e.name] * m.stderr) ** 2
        assign[e.name] = (c.type_name, f"{flag}: {c.type_name} (predicted loss {c.loss:.3g},"
                                       f" rel. error {m.error:.3g})")
        choices.append(TensorChoice(e.name, weights[e.name], n_sampled, e.source.n_rows, tuple(ms), c.type_name,
                                    first_choice.get(e.name)))
    final = Planner(registry, opts).plan(source, imatrix, assign)
    achieved = (sum(final.file_bytes(i) for i in range(len(final.files))) if what == "file bytes"
                else final.bytes_out)
    if achieved > target:  # cannot happen unless sizes are mispredicted; never write a file over the target
        raise UsageError(f"{flag}: planned {achieved} bytes, over the target {target} (a bug: please report)")
    report = TargetReport(what, target, achieved, budget, solution.loss, math.sqrt(var), sens_label,
                          tuple(choices), time.perf_counter() - start)
    notes = list(final.notes) + report.lines()
    warnings = list(final.warnings)
    if achieved < target * 0.995:
        warnings.append(f"{flag}: planned {achieved} bytes, more than 0.5% under the target {target} (the"
                        f" candidates' largest mix)")
    return attrs.evolve(final, target=report, notes=tuple(notes), warnings=tuple(warnings))


# -- outputs: recipe and picture -----------------------------------------------------------------------------------
def _toml_str(s: str) -> str:
    return "'" + s + "'" if "'" not in s and "\n" not in s else json.dumps(s)


def save_recipe(plan: Plan, path: str | os.PathLike[str]) -> None:
    """Write the plan's mix as a recipe: ``qf quantize --recipe FILE`` (with the same input, imatrix and
    non-recipe options) writes the same bytes.  User rules come first, then one anchored rule per tensor."""
    import re

    opts = plan.options
    lines = [f"# qf recipe written by --save-recipe from {plan.input.name}",
             "# reproduce: qf quantize --recipe THIS_FILE [--imatrix ...] [--allow-requantize] INPUT OUTPUT"]
    if plan.target is not None:
        for line in plan.target.lines():
            lines.append(f"# {line}")
    lines.append(f"extends = {_toml_str(plan.preset.name)}")
    for key, value in (("strategy", opts.strategy), ("target", opts.target), ("pure", opts.pure),
                       ("token_embedding_type", opts.token_embedding_type),
                       ("output_tensor_type", opts.output_tensor_type), ("mtp_types", opts.mtp_types),
                       ("on_missing_imatrix", opts.on_missing_imatrix)):
        if value is None:
            continue
        lines.append(f"{key} = " + (("true" if value else "false") if isinstance(value, bool) else _toml_str(value)))
    ruled = set()

    def rule(pattern, type_name, comment=None, strategy=None, imatrix=None):
        lines.append("")
        if comment:
            lines.append(f"# {comment}")
        lines.append("[[rule]]")
        lines.append(f"match = {_toml_str(pattern)}")
        lines.append(f"type = {_toml_str(type_name)}")
        if strategy:
            lines.append(f"strategy = {_toml_str(strategy)}")
        if imatrix:
            lines.append(f"imatrix = {_toml_str(imatrix)}")

    for r in opts.rules:
        rule(r.pattern, r.type_name, f"from {r.source}", r.strategy, r.imatrix)
    choices = {c.name: c for c in plan.target.tensors} if plan.target is not None else {}
    for e in plan.entries:
        if e.reason.startswith(("--token-embedding-type", "--output-tensor-type")) or e.name in ruled:
            continue
        if any(r.matches(e.name) for r in opts.rules):
            continue
        if e.dst is None and "(already " not in e.reason:
            continue  # not quantized at all
        type_name = e.dst.name if e.dst is not None else e.src_type.upper()
        c = choices.get(e.name)
        if c is not None:
            m = c.option(c.chosen)
            alts = ", ".join(f"{o.type_name} {c.weight * o.error:.3g}" for o in c.options
                             if o.type_name != c.chosen)
            comment = (f"predicted loss {c.loss:.4g} (rel. error {m.error:.4g} ± {m.stderr:.2g}, sensitivity"
                       f" {c.weight:.4g}); others: {alts}")
        else:
            comment = f"as planned: {e.reason}"
        rule("^" + re.escape(e.name) + "$", type_name, comment)
        ruled.add(e.name)
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot_mix(plan: Plan, path: str | os.PathLike[str], title: str | None = None) -> None:
    """The chosen mix as a PNG: layers x tensor kinds, coloured by bits per weight (needs matplotlib: qf[plot])."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'qf[plot]'") from None
    layered = [e for e in plan.entries if layer_of(e.name) >= 0 and e.source.n_dims >= 2]
    others = [e for e in plan.entries if layer_of(e.name) < 0 and e.source.n_dims >= 2]
    kinds = sorted({_kind(e.name) for e in layered})
    n_layer = max((layer_of(e.name) for e in layered), default=-1) + 1
    grid = np.full((len(kinds), max(n_layer, 1)), np.nan)
    labels = {}

    def bpw(e: PlanEntry) -> float:
        return e.n_bytes_out * 8 / max(1, e.source.n_elements)

    for e in layered:
        grid[kinds.index(_kind(e.name)), layer_of(e.name)] = bpw(e)
        labels[(kinds.index(_kind(e.name)), layer_of(e.name))] = e.dst_label
    fig, ax = plt.subplots(figsize=(max(6, 0.32 * n_layer + 3), 0.5 * len(kinds) + 2.2))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest")
    for (r, c), lab in labels.items():
        ax.text(c, r, lab.replace("_", "\n", 1), ha="center", va="center", fontsize=5, color="w")
    ax.set_yticks(range(len(kinds)), kinds)
    ax.set_xlabel("layer")
    fig.colorbar(im, ax=ax, label="bits per weight")
    extra = "; ".join(f"{e.name}: {e.dst_label} ({bpw(e):.2f})" for e in others if category(e.name) != "other"
                      or e.dst is not None)
    size = sum(plan.file_bytes(i) for i in range(len(plan.files)))
    ax.set_title((title or f"{plan.input.name} -> {size / 2**20:.2f} MiB, {plan.bytes_out * 8 / plan.n_elements:.3f}"
                  f" BPW") + ("\n" + extra if extra else ""), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
