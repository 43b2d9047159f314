"""The planner: every decision about every tensor, made before the first byte is written.

For each input tensor (in llama-quantize's order: layer number, then name) the planner decides whether it is
quantized at all (llama.cpp's rules), its target type and why (explicit option, ftype preset, shape fallback), its
imatrix slice and the strategy, and checks that the plan can run — all offenders are reported at once.
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
from qf.model import Preset, QuantType
from qf.plugins import Registry

GGML_QNT_VERSION = 2
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")

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


def layer_of(name: str) -> int:
    """sscanf(name, "blk.%d.") as llama.cpp uses it: the layer number, or -1."""
    m = _LAYER.match(name)
    return int(m.group(1)) if m else -1


def processing_order(tensors: Sequence[TensorInfo]) -> list[TensorInfo]:
    """llama-quantize's order without --keep-split: by (layer number, name)."""
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


@attrs.frozen
class TypeRule:
    """``--tensor-type PATTERN=TYPE``: a regex searched in the tensor name; the first matching rule wins."""

    pattern: str
    type_name: str
    source: str = "--tensor-type"
    regex: re.Pattern = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        try:
            compiled = re.compile(self.pattern)
        except re.error as exc:
            pos = f" at position {exc.pos}" if exc.pos is not None else ""
            raise UsageError(f"{self.source}: invalid regex {self.pattern!r}: {exc.msg}{pos}") from None
        object.__setattr__(self, "regex", compiled)

    def matches(self, name: str) -> bool:
        return self.regex.search(name) is not None


@attrs.frozen
class PlanOptions:
    """What the user asked for (the llama-quantize options qf mirrors)."""

    ftype: str
    strategy: str = "ggml"
    allow_requantize: bool = False
    pure: bool = False
    leave_output_tensor: bool = False
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    tensor_types: tuple[TypeRule, ...] = ()
    #: never fall back to another type when a row length does not fit the block size: fail instead
    strict_shapes: bool = False
    #: the --imatrix argument exactly as typed (stored in quantize.imatrix.file)
    imatrix_arg: str | None = None
    include_weights: tuple[str, ...] = ()
    exclude_weights: tuple[str, ...] = ()
    override_kv: tuple[str, ...] = ()


@attrs.frozen
class PlanEntry:
    index: int
    name: str
    source: TensorInfo
    src_type: str  # label of the input type (f32, q4_1 ...)
    dst: QuantType | None  # None: copied as it is (no quantizable or same type)
    dst_label: str
    reason: str
    strategy: str | None
    imatrix: np.ndarray | None = attrs.field(default=None, eq=False, repr=False)  # (n_mat, ne0)
    imatrix_name: str | None = None
    requires_imatrix: bool = False
    fallback_from: str | None = None
    n_bytes_in: int = 0
    n_bytes_out: int = 0

    @property
    def copy(self) -> bool:
        return self.dst is None


@attrs.frozen
class Plan:
    input: Path
    options: PlanOptions
    preset: Preset
    entries: tuple[PlanEntry, ...]
    kvs: tuple[KV, ...]
    alignment: int
    n_elements: int
    warnings: tuple[str, ...] = ()

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
            "tensors": [
                {
                    "name": e.name,
                    "shape": list(e.source.shape),
                    "from": e.src_type,
                    "type": e.dst_label,
                    "reason": e.reason,
                    "strategy": e.strategy,
                    "imatrix": e.imatrix is not None,
                    "fallback_from": e.fallback_from,
                    "bytes_in": e.n_bytes_in,
                    "bytes": e.n_bytes_out,
                }
                for e in self.entries
            ],
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "bits_per_weight": self.bytes_out * 8 / max(1, self.n_elements),
            "n_fallback": self.n_fallback,
            "warnings": list(self.warnings),
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


def output_kvs(
    input_kvs: Sequence[KV], preset: Preset, overrides: Sequence[KV], imatrix: Imatrix | None, imatrix_arg: str | None
) -> list[KV]:
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
    return kvs


class Planner:
    def __init__(self, registry: Registry, options: PlanOptions) -> None:
        self.registry = registry
        self.options = options
        self.preset = registry.preset(options.ftype)
        self.default_type = registry.quant_type(self.preset.default_type)
        self.strategy = registry.strategy(options.strategy)
        self.token_embedding_type = self._type_opt(options.token_embedding_type, "--token-embedding-type")
        self.output_tensor_type = self._type_opt(options.output_tensor_type, "--output-tensor-type")
        self.rule_types = [self._type_opt(r.type_name, r.source) for r in options.tensor_types]

    def _type_opt(self, name: str | None, option: str) -> QuantType | None:
        if name is None:
            return None
        try:
            return self.registry.quant_type(name)
        except Exception as exc:
            raise UsageError(f"{option}: {exc}") from None

    # -- per-tensor decision ---------------------------------------------------------------------------------------
    def choose(self, t: TensorInfo) -> tuple[QuantType | None, str, str | None]:
        """(target type or None to keep the tensor as is, reason, type before a shape fallback)."""
        opts = self.options
        if self.preset.only_copy:
            return None, "COPY", None
        why_not = quantizable(t.name, t.n_dims, quantize_output=not opts.leave_output_tensor)
        if why_not is not None:
            return None, why_not, None
        if self.token_embedding_type is not None and t.name in ("token_embd.weight", "per_layer_token_embd.weight"):
            return self._fit(t, self.token_embedding_type, "--token-embedding-type")
        if self.output_tensor_type is not None and t.name == "output.weight":
            return self._fit(t, self.output_tensor_type, "--output-tensor-type")
        qtype, reason = self.default_type, f"ftype {self.preset.name}"
        if qtype.is_quantized:
            for rule, rule_type in zip(opts.tensor_types, self.rule_types):
                if rule.matches(t.name):
                    qtype, reason = rule_type, f"{rule.source} {rule.pattern}={rule.type_name}"
                    break
            return self._fit(t, qtype, reason)
        return qtype, reason, None

    def _fit(self, t: TensorInfo, qtype: QuantType, reason: str) -> tuple[QuantType | None, str, str | None]:
        """llama.cpp's tensor_type_fallback for row lengths that are not a multiple of the block size."""
        if not qtype.is_quantized or qtype.fits(t.n_per_row):
            return qtype, reason, None
        if self.options.strict_shapes:
            raise PlanError(
                f"tensor {t.name!r}: row length {t.n_per_row} is not a multiple of {qtype.name}'s block size"
                f" {qtype.block_size} (and shape fallback is disabled)"
            )
        fallback = self.registry.quant_type(qtype.fallback) if qtype.fallback else qtype
        if not fallback.fits(t.n_per_row):
            fallback = self.registry.quant_type("F16")
        return fallback, f"{reason}; fallback (ncols {t.n_per_row} % {qtype.block_size} != 0)", qtype.name

    # -- the whole plan --------------------------------------------------------------------------------------------
    def plan(self, path: Path, kvs: Sequence[KV], tensors: Sequence[TensorInfo], imatrix: Imatrix | None) -> Plan:
        opts = self.options
        entries = []
        requant, missing, warnings = [], [], []
        for index, t in enumerate(processing_order(tensors)):
            src = self.registry.quant_type_by_id(t.type_id)
            src_label = self.registry.type_label(t.type_id)
            qtype, reason, fallback_from = self.choose(t)
            if qtype is not None and qtype.type_id == t.type_id:
                qtype, reason = None, f"{reason} (already {src_label})"
            entry_imatrix = None
            requires = bool(qtype is not None and qtype.quantize_requires_imatrix
                            and t.name not in ("token_embd.weight", "output.weight"))
            if qtype is not None:
                if src is None or not src.is_quantized and src.name not in ("F32", "F16", "BF16"):
                    raise PlanError(f"tensor {t.name!r}: cannot convert from {src_label}")
                if src.is_quantized and not opts.allow_requantize:
                    requant.append(f"{t.name} ({src_label})")
                if imatrix is not None and qtype.uses_imatrix:
                    n_mat = t.shape[2] if len(t.shape) > 2 else 1
                    entry_imatrix = imatrix.lookup(t.name, t.name, t.n_per_row, n_mat)
                if (requires or qtype.requires_imatrix) and entry_imatrix is None:
                    missing.append(f"{t.name} ({qtype.name})")
            n_out = t.n_bytes if qtype is None else t.n_rows * qtype.row_bytes(t.n_per_row)
            entries.append(PlanEntry(
                index, t.name, t, src_label, qtype, src_label if qtype is None else qtype.ggml_name, reason,
                None if qtype is None or not qtype.is_quantized else self.strategy.name,
                entry_imatrix, t.name if entry_imatrix is not None else None, requires, fallback_from,
                t.n_bytes, n_out,
            ))
            if qtype is not None and qtype.is_quantized and not self.strategy.supports(qtype):
                raise PlanError(f"strategy {self.strategy.name!r} does not support {qtype.name} (tensor {t.name!r})")
        if requant:
            raise PlanError(
                f"requantizing is disabled: {len(requant)} tensor(s) are already quantized, e.g. {requant[0]};"
                f" pass --allow-requantize"
            )
        if missing:
            listed = ", ".join(missing[:8]) + (f", ... ({len(missing)} in all)" if len(missing) > 8 else "")
            source = f"imatrix file {imatrix.path} has no entry for" if imatrix else "no --imatrix given; needed for"
            raise PlanError(f"{source} {len(missing)} tensor(s) whose type needs one: {listed}")
        overrides = [parse_override_kv(s) for s in opts.override_kv]
        out_kvs = output_kvs(kvs, self.preset, overrides, imatrix, opts.imatrix_arg)
        alignment = next((kv.value for kv in out_kvs if kv.key == "general.alignment"), 32)
        n_elements = sum(t.n_elements for t in tensors)
        return Plan(path, opts, self.preset, tuple(entries), tuple(out_kvs), alignment, n_elements, tuple(warnings))
