"""The planner: every decision about every tensor, made before the first byte is written.

For each input tensor, in llama-quantize's order (layer number then name; with --keep-split: split then offset), the
planner decides whether it is quantized at all (llama.cpp's rules), its target type and why (an explicit option or
rule, the ftype's mix, a shape fallback, an imatrix upgrade), its imatrix slice and its strategy — then checks that
the plan can run, reporting every offender at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from qf.errors import ImatrixError, PlanError, UsageError
from qf.gguf_io import KV, OutTensor, TensorInfo
from qf.imatrix import Imatrix
from qf.metadata import output_kvs, parse_override_kv, split_kvs
from qf.names import BLOCK_NUMBER, NEXTN, category, layer_of
from qf.options import QuantizeOptions
from qf.plugins import Registry
from qf.recipe import TypeRule
from qf.values import DEFAULT_TARGET, ArchFacts, Preset, QuantType, load_object

#: tensors llama-quantize never asks for imatrix data (tensor_requires_imatrix exempts them)
IMATRIX_EXEMPT = ("token_embd.weight", "output.weight")


def processing_order(tensors: Sequence[TensorInfo], keep_split: bool = False, order: str = "layer") -> list[TensorInfo]:
    """llama-quantize's order: by (layer number, name), or with --keep-split (or a target whose tool keeps the
    input's order, ``order="file"``) by (split, file offset)."""
    if keep_split or order == "file":
        return sorted(tensors, key=lambda t: (t.file_index, t.offset))
    return sorted(tensors, key=lambda t: (layer_of(t.name), t.name.encode()))


def quantizable(name: str, n_dims: int, facts: ArchFacts, quantize_output: bool = True) -> str | None:
    """None if llama.cpp would quantize this tensor, else the reason it stays as it is."""
    if n_dims < 2:
        return "1-D"
    if not name.endswith("weight"):
        return "not a weight"
    if not quantize_output and name == "output.weight":
        return "--leave-output-tensor"
    if name in facts.never_quantized_names:
        return f"never quantized ({name})"
    for part in facts.never_quantized:
        if part in name:
            return f"never quantized ({part})"
    return None


def prune_names(names: Sequence[str], prune: Sequence[int]) -> tuple[dict[str, str | None], int]:
    """llama.cpp's remap_layer over names in processing order: new name (None = pruned), and the new block count."""
    prune = sorted(set(prune))
    mapped: dict[int, str] = {}
    next_id = 0
    out: dict[str, str | None] = {}
    for name in names:
        m = BLOCK_NUMBER.search(name)
        if not prune or m is None:
            out[name] = name
            continue
        blk = int(m.group(1))
        if blk not in mapped:
            if blk in prune:
                mapped[blk] = ""
            elif blk < prune[0]:
                mapped[blk] = str(blk)
                next_id = blk + 1
            else:
                mapped[blk] = str(next_id)
                next_id += 1
        out[name] = None if not mapped[blk] else name[:m.start(1)] + mapped[blk] + name[m.end(1):]
    return out, next_id


@attrs.frozen
class PlanEntry:
    index: int
    name: str  # output name (differs from source.name when layers are pruned)
    source: TensorInfo
    src_type: str  # label of the input type (f32, q4_1 ...)
    dst: QuantType | None  # None: copied as it is (not quantizable, or already the target type)
    dst_label: str
    reason: str
    strategy: str | None
    imatrix: np.ndarray | None = attrs.field(default=None, eq=False, repr=False)  # (n_mat, ne0)
    requires_imatrix: bool = False
    fallback_from: str | None = None
    n_bytes_in: int = 0
    n_bytes_out: int = 0
    out_file: int = 0

    @property
    def copy(self) -> bool:
        return self.dst is None

    def out_tensor(self) -> OutTensor:
        """The tensor as the output file's header describes it."""
        type_id = self.source.type_id if self.dst is None else self.dst.type_id
        return OutTensor(self.name, self.source.shape, type_id, self.n_bytes_out)


@attrs.frozen
class OutFile:
    split_no: int
    kvs: tuple[KV, ...]
    entries: tuple[PlanEntry, ...]


@attrs.frozen
class Plan:
    input: Path
    options: QuantizeOptions
    preset: Preset
    entries: tuple[PlanEntry, ...]
    files: tuple[OutFile, ...]
    alignment: int
    n_elements: int
    facts: ArchFacts
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    #: with --target-size/--target-bpw: the choice made (a :class:`qf.app.target.TargetReport`), else None
    target: object = attrs.field(default=None, eq=False, repr=False)

    @property
    def kvs(self) -> tuple[KV, ...]:
        return self.files[0].kvs

    @property
    def n_fallback(self) -> int:
        return sum(1 for e in self.entries if e.fallback_from)

    @property
    def bytes_in(self) -> int:
        return sum(e.n_bytes_in for e in self.entries)

    @property
    def bytes_out(self) -> int:
        return sum(e.n_bytes_out for e in self.entries)

    def file_bytes(self, index: int) -> int:
        """The exact size of output file ``index``: header, metadata, tensor infos and aligned tensor data."""
        from qf.gguf_io.writer import header_bytes, pad

        f = self.files[index]
        head = len(header_bytes(list(f.kvs), [e.out_tensor() for e in f.entries], self.alignment))
        return head + sum(pad(e.n_bytes_out, self.alignment) for e in f.entries)

    def to_json(self) -> dict:
        return {
            "input": str(self.input),
            "ftype": self.preset.name,
            "file_type": self.preset.file_type,
            "arch": self.facts.arch,
            "tensors": [
                {
                    "name": e.name, "shape": list(e.source.shape), "from": e.src_type, "type": e.dst_label,
                    "reason": e.reason, "strategy": e.strategy, "imatrix": e.imatrix is not None,
                    "fallback_from": e.fallback_from, "bytes_in": e.n_bytes_in, "bytes": e.n_bytes_out,
                    "file": e.out_file,
                }
                for e in self.entries
            ],
            "files": len(self.files),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "bits_per_weight": self.bytes_out * 8 / max(1, self.n_elements),
            "n_fallback": self.n_fallback,
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }


class Planner:
    """Plans one quantization from resolved options (:func:`qf.options.resolve`)."""

    def __init__(self, registry: Registry, options: QuantizeOptions) -> None:
        self.registry = registry
        self.options = options
        self.target = options.target or DEFAULT_TARGET
        self.types = registry.types_of(self.target)
        self.preset = registry.preset(options.ftype)
        if self.preset.target not in self._target_chain():
            raise UsageError(f"ftype {self.preset.name} is for target {self.preset.target!r}, not {self.target!r}"
                             f" (see --target)")
        self.default_type = self._type_opt(self.preset.default_type, f"ftype {self.preset.name}")
        self.strategy = (registry.strategy(options.strategy) if options.strategy else registry.native_strategy())
        self.token_embedding_type = self._type_opt(options.token_embedding_type, "--token-embedding-type")
        self.output_tensor_type = self._type_opt(options.output_tensor_type, "--output-tensor-type")
        self.rule_types = [self._type_opt(r.type_name, r.source) for r in options.rules]
        for rule in options.rules:
            if rule.strategy is not None:
                registry.strategy(rule.strategy)
        self.rule_hits = [0] * len(options.rules)
        #: size targets (qf.app.target): types assigned to free tensors (name -> (type, reason)), and the names of the
        #: tensors no user rule or option fixes (filled by plan())
        self.assign: dict[str, tuple[str, str]] = {}
        self.free: set[str] = set()

    def _target_chain(self) -> list[str]:
        chain, name = [], self.target
        while name:
            chain.append(name)
            name = self.registry.target(name).base
        return chain

    def _type(self, name: str) -> QuantType:
        return self.registry.quant_type(name, self.target)

    def _type_opt(self, name: str | None, option: str) -> QuantType | None:
        if name is None:
            return None
        try:
            return self._type(name)
        except UsageError as exc:
            raise UsageError(f"{option}: {exc}") from None

    # -- per-tensor decision (llama_tensor_get_type) ---------------------------------------------------------------
    def choose(self, name: str, t: TensorInfo, mix: Any, facts: ArchFacts
               ) -> tuple[QuantType | None, str, str | None, TypeRule | None]:
        """(type or None to keep the tensor as it is, reason, type before a shape fallback, manual rule)."""
        opts = self.options
        if self.preset.only_copy:
            return None, "COPY", None, None
        why_not = quantizable(name, t.n_dims, facts, quantize_output=not opts.leave_output_tensor)
        if why_not is not None:
            return None, why_not, None, None
        if self.token_embedding_type is not None and category(name) == "token_embd":
            named = name == "per_layer_token_embd.weight" and any(r.matches(name) for r in opts.rules)
            if not named:
                return (*self._fit(name, t, self.token_embedding_type, "--token-embedding-type"), None)
        if self.output_tensor_type is not None and category(name) == "output":
            return (*self._fit(name, t, self.output_tensor_type, "--output-tensor-type"), None)
        qtype, reason = self.default_type, f"ftype {self.preset.name}"
        if not qtype.is_quantized:
            return qtype, reason, None, None
        manual = None
        for index, (rule, rule_type) in enumerate(zip(opts.rules, self.rule_types)):
            if rule.matches(name):
                qtype, reason, manual = rule_type, rule.describe(), rule
                self.rule_hits[index] += 1
                break
        if manual is None and not opts.pure and mix is not None:
            nextn = NEXTN.match(name) if opts.mtp_types else None
            as_name = name
            if nextn is not None and nextn.group("part") in ("eh_proj", "shared_head_head"):
                as_name = "output.weight"
            elif nextn is not None and nextn.group("part") == "embed_tokens":
                as_name = "token_embd.weight"
            if as_name == "output.weight" or (mix.tied and as_name == "token_embd.weight"):
                if self.output_tensor_type is not None:  # a tied token_embd follows --output-tensor-type
                    return (*self._fit(name, t, self.output_tensor_type, "--output-tensor-type (tied)"), None)
            chosen, why = mix.choose(as_name, t.n_per_row, t.shape[2] if len(t.shape) > 2 else 1)
            if as_name != name:
                why = f"--mtp-types (as {as_name}); {why}"
            if chosen != "default":
                qtype = self._type(chosen)
            reason = why
        if manual is None:
            self.free.add(name)
            if name in self.assign:  # a size target's choice (qf.app.target), never over a user's rule
                qtype, reason = self._type(self.assign[name][0]), self.assign[name][1]
        return (*self._fit(name, t, qtype, reason), manual)

    def _fit(self, name: str, t: TensorInfo, qtype: QuantType, reason: str) -> tuple[QuantType, str, str | None]:
        """llama.cpp's tensor_type_fallback for row lengths that are not a multiple of the block size; then a
        row-interleaved type's base type for a token embedding or a row count it does not divide."""
        fitted, why, before = self._fit_row_length(name, t, qtype, reason)
        if fitted.interleave is not None:
            rows, base = fitted.interleave
            n_rows = t.shape[1] if len(t.shape) > 1 else 1
            if category(name) == "token_embd" or n_rows % rows:
                what = "a token embedding" if category(name) == "token_embd" else f"{n_rows} rows % {rows} != 0"
                return self._type(base), f"{why}; {fitted.name} interleaves rows: {what}", before or fitted.name
        return fitted, why, before

    def _fit_row_length(self, name: str, t: TensorInfo, qtype: QuantType, reason: str
                        ) -> tuple[QuantType, str, str | None]:
        if not qtype.is_quantized or qtype.fits(t.n_per_row):
            return qtype, reason, None
        if self.options.strict_shapes:
            raise PlanError(
                f"tensor {name!r}: row length {t.n_per_row} is not a multiple of {qtype.name}'s block size"
                f" {qtype.block_size} (and shape fallback is disabled)"
            )
        # follow the types' fallback chain (Q2_K -> Q4_0 -> F16, IQ4_XS -> IQ4_NL -> F16 ...) to the first that fits
        fallback, seen = qtype, [qtype.name]
        while not fallback.fits(t.n_per_row) and fallback.fallback and fallback.fallback not in seen:
            fallback = self._type(fallback.fallback)
            seen.append(fallback.name)
        if not fallback.fits(t.n_per_row):
            raise PlanError(f"tensor {name!r}: row length {t.n_per_row} fits none of {' -> '.join(seen)}"
                            f" (the fallback chain of {qtype.name})")
        return fallback, f"{reason}; fallback: ncols {t.n_per_row} % {qtype.block_size} != 0", qtype.name

    def _imatrix_free(self, qtype: QuantType, t: TensorInfo) -> QuantType | None:
        """The nearest type (by bits per weight, at least as many) that needs no imatrix and fits the rows."""
        candidates = [q for q in self.types.values()
                      if q.is_quantized and not q.requires_imatrix and not q.quantize_requires_imatrix
                      and q.name not in self.preset.imatrix_required and q.fits(t.n_per_row)
                      and q.bits_per_weight >= qtype.bits_per_weight and self.registry.searchable(q)
                      and q.uses_imatrix]
        preferred = [q for q in candidates if q.name == qtype.imatrix_free] if qtype.imatrix_free else []
        if preferred:
            return preferred[0]
        return min(candidates, key=lambda q: (q.bits_per_weight, q.type_id), default=None)

    # -- the whole plan --------------------------------------------------------------------------------------------
    def plan(self, source, imatrix: Imatrix | None, assign: dict[str, tuple[str, str]] | None = None) -> Plan:
        """The plan; ``assign`` (from a size target) sets the type of tensors no user rule or option fixes."""
        opts = self.options
        self.assign, self.free = dict(assign or {}), set()
        self.rule_hits = [0] * len(opts.rules)
        metadata = source.metadata
        arch = self.registry.arch_for(metadata.get("general.architecture", ""))
        facts_ref = arch.facts or getattr(self.registry.generic_arch(), "facts", None)
        if facts_ref is None:
            raise PlanError(f"architecture plugin {arch.name!r} gives no facts and no generic architecture does")
        facts = load_object(facts_ref)(metadata, source.tensors)
        layout = self.registry.target(self.target)
        order = processing_order(source.tensors, opts.keep_split, layout.tensor_order)
        renamed, new_block_count = prune_names([t.name for t in order], opts.prune_layers)
        if opts.prune_layers:
            bad = [i for i in opts.prune_layers if i < 0 or (facts.n_layer_all and i >= facts.n_layer_all)]
            if bad:
                raise UsageError(f"--prune-layers: layer(s) {bad} out of range (the model has {facts.n_layer_all})")
        kept = [(renamed[t.name], t) for t in order if renamed[t.name] is not None]
        names = [n for n, _ in kept]
        has_imatrix = imatrix is not None and len(imatrix.entries) > 0
        mix = None
        if self.preset.mix is not None and self.default_type.is_quantized:
            mix = self.registry.mix(self.preset.mix).start(facts, self.preset.ftype, self.default_type.name,
                                                           self.default_type.block_size, has_imatrix, names,
                                                           arch.rules, arch.name)

        entries, requant, missing, zeros, warnings, notes = [], [], [], [], [], []
        for index, (name, t) in enumerate(kept):
            src = self.registry.quant_type_by_id(t.type_id, self.target)
            src_label = self.registry.type_label(t.type_id, self.target)
            qtype, reason, fallback_from, rule = self.choose(name, t, mix, facts)
            if qtype is not None and qtype.type_id == t.type_id:
                qtype, reason = None, f"{reason} (already {src_label})"
            strategy = (rule.strategy if rule is not None and rule.strategy else self.strategy.name)
            entry_imatrix = None
            requires = bool(qtype is not None and name not in IMATRIX_EXEMPT
                            and (qtype.quantize_requires_imatrix or qtype.name in self.preset.imatrix_required))
            if qtype is not None:
                if src is None:
                    raise PlanError(f"tensor {t.name!r}: cannot convert from {src_label} (no plugin decodes it)")
                if src.is_quantized and not opts.allow_requantize:
                    requant.append(f"{t.name} ({src_label})")
                use_imatrix = imatrix is not None and qtype.uses_imatrix and not (rule and rule.imatrix == "ignore")
                if use_imatrix:
                    n_mat = t.shape[2] if len(t.shape) > 2 else 1
                    entry_imatrix = imatrix.lookup(t.name, name, t.n_per_row, n_mat)
                    if entry_imatrix is not None and (entry_imatrix < 0).any():
                        raise ImatrixError(f"imatrix file {imatrix.path}: entry {t.name!r} has negative values"
                                           f" (importances are sums of squares)")
                    if entry_imatrix is not None and not entry_imatrix.any():
                        zeros.append(name)
                needs = requires or qtype.requires_imatrix
                if needs and entry_imatrix is None:
                    if opts.on_missing_imatrix == "upgrade" or (opts.on_missing_imatrix == "allow"
                                                                and qtype.requires_imatrix):
                        better = self._imatrix_free(qtype, t)
                        if better is None:
                            missing.append(f"{name} ({qtype.name}, no imatrix-free alternative)")
                        else:
                            reason = f"{reason}; --on-missing-imatrix: {qtype.name} -> {better.name} (no imatrix)"
                            notes.append(f"{name}: {qtype.name} needs an imatrix; upgraded to {better.name}")
                            qtype, requires = better, False
                    elif opts.on_missing_imatrix == "allow":
                        notes.append(f"{name}: {qtype.name} without imatrix data (--on-missing-imatrix allow)")
                    else:
                        missing.append(f"{name} ({qtype.name})")
                if qtype.is_quantized:
                    strat = self.registry.strategy(strategy)
                    if not strat.supports(qtype):
                        raise PlanError(f"strategy {strat.name!r} does not support {qtype.name} (tensor {name!r};"
                                        f" see `qf list-strategies`)")
            n_out = t.n_bytes if qtype is None else t.n_rows * qtype.row_bytes(t.n_per_row)
            entries.append(PlanEntry(
                index, name, t, src_label, qtype, src_label if qtype is None else qtype.ggml_name, reason,
                None if qtype is None or not qtype.is_quantized else strategy,
                entry_imatrix, requires, fallback_from, t.n_bytes, n_out, t.file_index if opts.keep_split else 0,
            ))
        if requant:
            raise PlanError(
                f"requantizing is disabled: {len(requant)} tensor(s) are already quantized, e.g. {requant[0]};"
                f" pass --allow-requantize"
            )
        if missing:
            listed = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
            where = f"imatrix file {imatrix.path} has no entry for" if imatrix else "no --imatrix given; needed for"
            message = (f"{where} {len(missing)} tensor(s) whose type needs one: {listed}"
                       f" (see --on-missing-imatrix)")
            if not opts.dry_run:
                raise PlanError(message)
            warnings.append(message)
        if zeros:
            listed = ", ".join(zeros[:8]) + (f", ... ({len(zeros)} in all)" if len(zeros) > 8 else "")
            message = (f"imatrix file {imatrix.path}: all-zero importances for {len(zeros)} tensor(s): {listed}"
                       f" (every weight would be dropped; --exclude-weights NAME, or a recipe rule with"
                       f" imatrix = \"ignore\", quantizes them without it)")
            if not opts.dry_run:
                raise ImatrixError(message)
            warnings.append(message)
        for rule, hits in zip(opts.rules, self.rule_hits):
            if hits == 0:
                warnings.append(f"{rule.describe()} matches no tensor")
            else:
                notes.append(f"applying override: {rule.pattern} -> {rule.type_name} ({hits} tensors)")
        if self.preset.only_copy is False and self.default_type.is_quantized is False and opts.rules:
            warnings.append(f"--tensor-type rules are ignored for the non-quantized ftype {self.preset.name}")

        overrides = [parse_override_kv(s) for s in opts.override_kv]
        block_count = (f"{facts.arch}.block_count", new_block_count) if opts.prune_layers else None
        kvs = output_kvs(source.kvs, self.preset, overrides, imatrix, opts.imatrix, block_count,
                         style=layout.kv_style)
        alignment = next((kv.value for kv in kvs if kv.key == "general.alignment"), 32)
        if opts.split_max_size is not None or opts.split_max_tensors is not None:
            entries, files = gguf_split_layout(entries, kvs, opts)
        else:
            files = self._files(entries, kvs, len(source.files) if opts.keep_split else 1)
        n_elements = sum(t.n_elements for _, t in kept)
        return Plan(source.path, opts, self.preset, tuple(entries), files, alignment, n_elements, facts,
                    tuple(warnings), tuple(notes))

    @staticmethod
    def _files(entries: list[PlanEntry], kvs: list[KV], n_split: int) -> tuple[OutFile, ...]:
        if n_split == 1:
            return (OutFile(0, tuple(kvs), tuple(entries)),)
        files = []
        for i in range(n_split):
            split = split_kvs(i, n_split, len(entries))
            file_kvs = (kvs if i == 0 else []) + split
            files.append(OutFile(i, tuple(file_kvs), tuple(e for e in entries if e.out_file == i)))
        return tuple(files)


#: gguf-split sizes every tensor padded to GGUF's default alignment when it cuts by size
GGUF_DEFAULT_ALIGNMENT = 32


def parse_split_size(text: str) -> int:
    """gguf-split's ``--split-max-size``: ``N`` followed by ``M`` (10^6 bytes) or ``G`` (10^9), N > 0."""
    text = str(text).strip()
    units = {"M": 1000 ** 2, "G": 1000 ** 3}
    if not text or text[-1] not in units:
        raise UsageError(f"--split-max-size: supported units are M (megabytes) or G (gigabytes), got {text!r}")
    number = text[:-1].strip()
    if not number.isdigit() or int(number) <= 0:
        raise UsageError(f"--split-max-size: size must be a positive value, got {text!r}")
    return int(number) * units[text[-1]]


def gguf_split_layout(entries: list[PlanEntry], kvs: list[KV], opts: QuantizeOptions
                      ) -> tuple[list[PlanEntry], tuple[OutFile, ...]]:
    """The output cut into a split set exactly as llama.cpp's ``gguf-split --split`` cuts the unsplit file: tensors
    in order; a new file when ``--split-max-tensors`` N tensors are in the current one, or when the next tensor's
    data (padded to 32 bytes) would take the current file's tensor data past ``--split-max-size``; every metadata
    key in the first file only; ``split.no``, ``split.tensors.count``, ``split.count`` (gguf-split's order: it sets
    the count last) in every file."""
    if opts.keep_split:
        raise UsageError("--keep-split cannot be combined with --split-max-size/--split-max-tensors")
    if opts.split_max_size is not None and opts.split_max_tensors is not None:
        raise UsageError("either --split-max-tensors or --split-max-size can be given, but not both")
    max_bytes = parse_split_size(opts.split_max_size) if opts.split_max_size is not None else None
    max_tensors = opts.split_max_tensors
    if max_tensors is not None and max_tensors < 1:
        raise UsageError(f"--split-max-tensors must be a positive integer, not {max_tensors}")
    n = len(entries)
    split_of, current, size = [], 0, 0
    for i, e in enumerate(entries):
        padded = -(-e.n_bytes_out // GGUF_DEFAULT_ALIGNMENT) * GGUF_DEFAULT_ALIGNMENT
        cut = (size + padded > max_bytes) if max_bytes is not None else (0 < i < n and i % max_tensors == 0)
        if cut:
            if not any(f == current for f in split_of):
                raise UsageError(f"--split-max-size {opts.split_max_size}: one of the splits would have no tensors"
                                 f" ({e.name!r} alone is {padded} bytes)")
            current, size = current + 1, padded
        else:
            size += padded
        split_of.append(current)
    n_split = current + 1
    entries = [attrs.evolve(e, out_file=f) for e, f in zip(entries, split_of)]
    files = []
    for i in range(n_split):
        no, count, tensors = split_kvs(i, n_split, n)
        files.append(OutFile(i, tuple((kvs if i == 0 else []) + [no, tensors, count]),
                             tuple(e for e in entries if e.out_file == i)))
    return entries, tuple(files)


def plan_quantization(registry: Registry, options: QuantizeOptions, source) -> Plan:
    """The plan for quantizing ``source`` (a :class:`qf.gguf_io.TensorSource`) as resolved ``options`` ask."""
    imatrix = None
    if options.imatrix is not None:
        imatrix = Imatrix.load(options.imatrix).filtered(list(options.include_weights), list(options.exclude_weights))
    return Planner(registry, options).plan(source, imatrix)
