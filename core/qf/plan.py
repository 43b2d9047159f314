"""The planner: every decision about every tensor, made before the first byte is written.

For each input tensor, in llama-quantize's order (layer number then name; with --keep-split: split then offset), the
planner decides whether it is quantized at all (llama.cpp's rules), its target type and why (an explicit option or
rule, the ftype's mix, a shape fallback, an imatrix upgrade), its imatrix slice and its strategy — then checks that
the plan can run, reporting every offender at once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import attrs
import numpy as np

from qf.errors import PlanError, UsageError
from qf.gguf_io import KV, TensorInfo, make_kv
from qf.imatrix import Imatrix
from qf.mix import MixState, category
from qf.model import ArchFacts, Preset, QuantType, load_object
from qf.plugins import Registry

GGML_QNT_VERSION = 2
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")
TOKEN_EMBD_NAMES = ("token_embd.weight", "per_layer_token_embd.weight")
ON_MISSING_IMATRIX = ("error", "upgrade", "allow")

# llama.cpp's tensor_allows_quantization: substrings of names that are never quantized
_NEVER_QUANTIZED = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel", "per_layer_model_proj",
    "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight", "indexer.q_proj.weight",
    "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
    "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight", "time_mix_a1.weight",
    "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight", "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd",
    "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd",
)
_NEVER_QUANTIZED_NAMES = ("position_embd.weight", "token_types.weight")
_LAYER = re.compile(r"blk\.([+-]?\d+)")
_BLK = re.compile(r"blk\.(\d+)\.")
_NEXTN = re.compile(r"^blk\.\d+\.nextn\.(?P<part>[a-z_]+)\.weight$")


def layer_of(name: str) -> int:
    """sscanf(name, "blk.%d.") as llama.cpp uses it: the layer number, or -1."""
    m = _LAYER.match(name)
    return int(m.group(1)) if m else -1


def processing_order(tensors: Sequence[TensorInfo], keep_split: bool = False) -> list[TensorInfo]:
    """llama-quantize's order: by (layer number, name), or with --keep-split by (split, file offset)."""
    if keep_split:
        return sorted(tensors, key=lambda t: (t.file_index, t.offset))
    return sorted(tensors, key=lambda t: (layer_of(t.name), t.name.encode()))


def quantizable(name: str, n_dims: int, extra_excluded: Sequence[str] = (), quantize_output: bool = True) -> str | None:
    """None if llama.cpp would quantize this tensor, else the reason it stays as it is."""
    if n_dims < 2:
        return "1-D"
    if not name.endswith("weight"):
        return "not a weight"
    if not quantize_output and name == "output.weight":
        return "--leave-output-tensor"
    if name in _NEVER_QUANTIZED_NAMES:
        return "positional/token-type embedding"
    for part in (*_NEVER_QUANTIZED, *extra_excluded):
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
        m = _BLK.search(name)
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
class TypeRule:
    """A manual rule: tensors whose name matches ``pattern`` (regex search, case-sensitive) get ``type_name``.

    From ``--tensor-type`` (lower-cased there, as llama-quantize does), ``--tensor-type-file`` or a recipe.  Rules are
    tried in order; the first match wins.  A recipe rule may also set the strategy and the imatrix use."""

    pattern: str
    type_name: str
    source: str = "--tensor-type"
    strategy: str | None = None
    imatrix: str | None = None  # None: use it if there is one; "ignore": quantize without it
    regex: re.Pattern = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            pos = f" at position {exc.pos}" if exc.pos is not None else ""
            raise UsageError(f"{self.source}: invalid regex {self.pattern!r}: {exc.msg}{pos}") from None
        object.__setattr__(self, "regex", compiled)
        if self.imatrix not in (None, "use", "ignore"):
            raise UsageError(f"{self.source}: imatrix must be 'use' or 'ignore', not {self.imatrix!r}")

    def matches(self, name: str) -> bool:
        return self.regex.search(name) is not None

    def describe(self) -> str:
        return f"{self.source} {self.pattern}={self.type_name}"


@attrs.frozen
class PlanOptions:
    """What the user asked for (the llama-quantize options qf mirrors, and qf's own)."""

    ftype: str
    strategy: str = "ggml"
    allow_requantize: bool = False
    pure: bool = False
    leave_output_tensor: bool = False
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    rules: tuple[TypeRule, ...] = ()
    #: never fall back to another type when a row length does not fit the block size: fail instead
    strict_shapes: bool = False
    #: the --imatrix argument exactly as typed (stored in quantize.imatrix.file)
    imatrix_arg: str | None = None
    include_weights: tuple[str, ...] = ()
    exclude_weights: tuple[str, ...] = ()
    override_kv: tuple[str, ...] = ()
    prune_layers: tuple[int, ...] = ()
    keep_split: bool = False
    on_missing_imatrix: str = "error"
    #: MTP/NextN heads typed like the tensors they mirror (eh_proj/shared_head_head like output ...)
    mtp_types: bool = False
    dry_run: bool = False


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


@attrs.frozen
class OutFile:
    split_no: int
    kvs: tuple[KV, ...]
    entries: tuple[PlanEntry, ...]


@attrs.frozen
class Plan:
    input: Path
    options: PlanOptions
    preset: Preset
    entries: tuple[PlanEntry, ...]
    files: tuple[OutFile, ...]
    alignment: int
    n_elements: int
    facts: ArchFacts
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

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


def parse_override_kv(spec: str) -> KV:
    """``KEY=TYPE:VALUE`` as llama.cpp's string_parse_kv_override (int -> u32 of |v|, float -> f32, bool, str)."""
    from gguf.constants import GGUFValueType as T

    key, sep, rest = spec.partition("=")
    if not sep or not key or len(key) >= 128:
        raise UsageError(f"--override-kv: malformed KV override {spec!r} (expected KEY=TYPE:VALUE)")
    kind, colon, value = rest.partition(":")
    if not colon:
        raise UsageError(f"--override-kv: invalid type for KV override {spec!r} (int, float, bool or str)")
    if kind == "int":
        m = re.match(r"\s*[+-]?\d+", value)
        return make_kv(key, T.UINT32, abs(int(m.group(0))) & 0xFFFFFFFF if m else 0)
    if kind == "float":
        m = re.match(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", value)
        return make_kv(key, T.FLOAT32, float(m.group(0)) if m else 0.0)
    if kind == "bool":
        if value not in ("true", "false"):
            raise UsageError(f"--override-kv: invalid boolean value for KV override {spec!r}")
        return make_kv(key, T.BOOL, value == "true")
    if kind == "str":
        if len(value.encode()) > 127:
            raise UsageError(f"--override-kv: malformed KV override {spec!r}, value cannot exceed 127 chars")
        return make_kv(key, T.STRING, value)
    raise UsageError(f"--override-kv: invalid type {kind!r} for KV override {spec!r} (int, float, bool or str)")


def _truncate127(s: str) -> str:
    return s.encode("utf-8", errors="surrogateescape")[:127].decode("utf-8", errors="ignore")


def output_kvs(input_kvs: Sequence[KV], preset: Preset, overrides: Sequence[KV], imatrix: Imatrix | None,
               imatrix_arg: str | None, block_count: tuple[str, int] | None = None) -> list[KV]:
    """The output metadata in llama-quantize's order: input KVs, then the keys it sets (each set moves a key last)."""
    from gguf.constants import GGUFValueType as T

    kvs = list(input_kvs)

    def set_kv(kv: KV) -> None:
        kvs[:] = [k for k in kvs if k.key != kv.key]
        kvs.append(kv)

    set_kv(make_kv("general.quantization_version", T.UINT32, GGML_QNT_VERSION))
    set_kv(make_kv("general.file_type", T.UINT32, preset.file_type))
    kvs[:] = [k for k in kvs if k.key not in SPLIT_KEYS]
    for kv in overrides:
        set_kv(kv)
    if imatrix is not None:
        set_kv(make_kv("quantize.imatrix.file", T.STRING, _truncate127(imatrix_arg or str(imatrix.path))))
        if imatrix.datasets:
            set_kv(make_kv("quantize.imatrix.dataset", T.STRING, _truncate127(imatrix.datasets[0])))
        set_kv(make_kv("quantize.imatrix.entries_count", T.UINT32, len(imatrix.entries)))
        if imatrix.chunk_count > 0:
            set_kv(make_kv("quantize.imatrix.chunks_count", T.UINT32, imatrix.chunk_count))
    if block_count is not None:
        set_kv(make_kv(block_count[0], T.UINT32, block_count[1]))
    return kvs


def split_kvs(split_no: int, n_split: int, n_tensors: int) -> list[KV]:
    from gguf.constants import GGUFValueType as T

    return [make_kv("split.no", T.UINT16, split_no), make_kv("split.count", T.UINT16, n_split),
            make_kv("split.tensors.count", T.INT32, n_tensors)]


def default_facts(metadata: dict) -> ArchFacts:
    """Facts from the standard hparam keys (what llama.cpp's loader reads for every architecture)."""
    arch = metadata.get("general.architecture", "")

    def first(key: str, default: int = 0) -> int:
        value = metadata.get(f"{arch}.{key}", default)
        if isinstance(value, (list, tuple, np.ndarray)):
            value = value[0] if len(value) else default
        return int(value)

    n_head = first("attention.head_count")
    n_head_kv = first("attention.head_count_kv", n_head)
    return ArchFacts(arch=arch, n_layer_all=first("block_count"), n_nextn=first("nextn_predict_layers"),
                     n_expert=first("expert_count"), n_gqa=n_head // n_head_kv if n_head_kv else 0)


class Planner:
    def __init__(self, registry: Registry, options: PlanOptions) -> None:
        self.registry = registry
        self.options = options
        if options.on_missing_imatrix not in ON_MISSING_IMATRIX:
            raise UsageError(f"--on-missing-imatrix must be one of {', '.join(ON_MISSING_IMATRIX)}")
        self.preset = registry.preset(options.ftype)
        self.default_type = registry.quant_type(self.preset.default_type)
        self.strategy = registry.strategy(options.strategy)
        self.token_embedding_type = self._type_opt(options.token_embedding_type, "--token-embedding-type")
        self.output_tensor_type = self._type_opt(options.output_tensor_type, "--output-tensor-type")
        self.rule_types = [self._type_opt(r.type_name, r.source) for r in options.rules]
        for rule in options.rules:
            if rule.strategy is not None:
                registry.strategy(rule.strategy)
        self.rule_hits = [0] * len(options.rules)

    def _type_opt(self, name: str | None, option: str) -> QuantType | None:
        if name is None:
            return None
        try:
            return self.registry.quant_type(name)
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(f"{option}: {exc}") from None

    # -- per-tensor decision (llama_tensor_get_type) ---------------------------------------------------------------
    def choose(self, name: str, t: TensorInfo, mix: MixState | None, facts: ArchFacts
               ) -> tuple[QuantType | None, str, str | None, TypeRule | None]:
        """(type or None to keep the tensor as it is, reason, type before a shape fallback, manual rule)."""
        opts = self.options
        if self.preset.only_copy:
            return None, "COPY", None, None
        why_not = quantizable(name, t.n_dims, facts.never_quantized, quantize_output=not opts.leave_output_tensor)
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
            nextn = _NEXTN.match(name) if opts.mtp_types else None
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
                qtype = self.registry.quant_type(chosen)
            reason = why
        return (*self._fit(name, t, qtype, reason), manual)

    def _fit(self, name: str, t: TensorInfo, qtype: QuantType, reason: str) -> tuple[QuantType, str, str | None]:
        """llama.cpp's tensor_type_fallback for row lengths that are not a multiple of the block size."""
        if not qtype.is_quantized or qtype.fits(t.n_per_row):
            return qtype, reason, None
        if self.options.strict_shapes:
            raise PlanError(
                f"tensor {name!r}: row length {t.n_per_row} is not a multiple of {qtype.name}'s block size"
                f" {qtype.block_size} (and shape fallback is disabled)"
            )
        # follow the fallback chain (Q1_0 -> Q2_0 -> Q4_0, IQ4_XS -> IQ4_NL ...) to the first type that fits;
        # where none does, F16 — as llama.cpp does for 32-element types (it throws where it has no fallback at all)
        fallback, seen = qtype, {qtype.name}
        while not fallback.fits(t.n_per_row) and fallback.fallback and fallback.fallback not in seen:
            fallback = self.registry.quant_type(fallback.fallback)
            seen.add(fallback.name)
        if not fallback.fits(t.n_per_row):
            fallback = self.registry.quant_type("F16")
        return fallback, f"{reason}; fallback: ncols {t.n_per_row} % {qtype.block_size} != 0", qtype.name

    def _imatrix_free(self, qtype: QuantType, t: TensorInfo) -> QuantType | None:
        """The nearest type (by bits per weight, at least as many) that needs no imatrix and fits the rows."""
        candidates = [q for q in self.registry.quant_types.values()
                      if q.is_quantized and not q.requires_imatrix and not q.quantize_requires_imatrix
                      and q.name not in self.preset.imatrix_required and q.fits(t.n_per_row)
                      and q.bits_per_weight >= qtype.bits_per_weight and "grid" not in q.problems
                      and q.uses_imatrix]
        preferred = [q for q in candidates if q.name == qtype.imatrix_free] if qtype.imatrix_free else []
        if preferred:
            return preferred[0]
        return min(candidates, key=lambda q: (q.bits_per_weight, q.type_id), default=None)

    # -- the whole plan --------------------------------------------------------------------------------------------
    def plan(self, source, imatrix: Imatrix | None) -> Plan:
        opts = self.options
        metadata = source.metadata
        arch = self.registry.arch_for(metadata.get("general.architecture", ""))
        facts = load_object(arch.facts)(metadata, source.tensors) if arch.facts else default_facts(metadata)
        order = processing_order(source.tensors, opts.keep_split)
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
            from qf.mix import Mix

            extra = Mix.from_toml(f"{arch.name}-rules", arch.rules, f"arch plugin {arch.name!r}").rules \
                if arch.rules else ()
            mix = MixState(self.registry.mix(self.preset.mix), facts, self.preset.ftype, self.default_type.name,
                           self.default_type.block_size, has_imatrix, names, extra)

        entries, requant, missing, warnings, notes = [], [], [], [], []
        for index, (name, t) in enumerate(kept):
            src = self.registry.quant_type_by_id(t.type_id)
            src_label = self.registry.type_label(t.type_id)
            qtype, reason, fallback_from, rule = self.choose(name, t, mix, facts)
            if qtype is not None and qtype.type_id == t.type_id:
                qtype, reason = None, f"{reason} (already {src_label})"
            strategy = (rule.strategy if rule is not None and rule.strategy else self.strategy.name)
            entry_imatrix = None
            requires = bool(qtype is not None and name not in ("token_embd.weight", "output.weight")
                            and (qtype.quantize_requires_imatrix or qtype.name in self.preset.imatrix_required))
            if qtype is not None:
                if src is None or (src.is_quantized is False and src.name not in ("F32", "F16", "BF16")):
                    raise PlanError(f"tensor {t.name!r}: cannot convert from {src_label}")
                if src.is_quantized and not opts.allow_requantize:
                    requant.append(f"{t.name} ({src_label})")
                use_imatrix = imatrix is not None and qtype.uses_imatrix and not (rule and rule.imatrix == "ignore")
                if use_imatrix:
                    n_mat = t.shape[2] if len(t.shape) > 2 else 1
                    entry_imatrix = imatrix.lookup(t.name, name, t.n_per_row, n_mat)
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
        for rule, hits in zip(opts.rules, self.rule_hits):
            if hits == 0:
                warnings.append(f"{rule.describe()} matches no tensor")
            else:
                notes.append(f"applying override: {rule.pattern} -> {rule.type_name} ({hits} tensors)")
        if self.preset.only_copy is False and self.default_type.is_quantized is False and opts.rules:
            warnings.append(f"--tensor-type rules are ignored for the non-quantized ftype {self.preset.name}")

        overrides = [parse_override_kv(s) for s in opts.override_kv]
        block_count = (f"{facts.arch}.block_count", new_block_count) if opts.prune_layers else None
        kvs = output_kvs(source.kvs, self.preset, overrides, imatrix, opts.imatrix_arg, block_count)
        alignment = next((kv.value for kv in kvs if kv.key == "general.alignment"), 32)
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
