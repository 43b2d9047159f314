"""The values plugins register: quant types, problem kinds, strategies, targets, architectures and presets.

All are frozen attrs values.  Code is referenced lazily by ``"module:attribute"`` strings, so that registering (and
``qf list-types``) imports no kernel module and compiles nothing; :func:`load_object` resolves a reference when a
tensor is actually quantized.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from types import MappingProxyType
from typing import Any

import attrs

#: the runtime a file is written for when nothing else is asked: llama.cpp (mainline ggml)
DEFAULT_TARGET = "ggml"


def _check_ref(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None and (value.count(":") != 1 or not all(value.split(":"))):
        raise ValueError(f"{attribute.name} must be a 'module:attribute' reference, got {value!r}")


def _check_refs(instance: Any, attribute: attrs.Attribute, value: Mapping[str, str]) -> None:
    for ref in value.values():
        _check_ref(instance, attribute, ref)


def _frozen_mapping(value: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(value or {}))


@cache
def load_object(ref: str) -> Any:
    """Import ``"package.module:attr"`` and return the attribute (cached)."""
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@attrs.frozen
class ProblemKind:
    """A search problem a quant type can pose to generic strategies (``symmetric``: x ≈ d·q, …).

    Types name the kinds they pose (:attr:`QuantType.problems`), strategies the kinds they solve
    (:attr:`Strategy.solvers`); both must be registered kinds.  A plugin may register a new one."""

    name: str
    description: str = ""
    plugin: str = ""


@attrs.frozen
class QuantType:
    """A GGUF tensor storage type: its layout, and where its kernels live.

    ``codec`` names an object with ``quantize(x, imatrix, strategy)`` and ``dequantize(data, n_per_row)``
    (see :class:`qf.codec.Codec`); it is imported only when needed.  ``target`` is the runtime that defines the type
    (its ``type_id`` is unique within that target's types).
    """

    name: str
    type_id: int
    block_size: int
    type_size: int
    codec: str = attrs.field(validator=_check_ref)
    #: the problem kinds :meth:`qf.codec.Codec.pose` returns (empty: only the type's own search, ``ggml``)
    problems: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    #: spelling of ggml_type_name() (q4_K, iq2_xxs, bf16): used in logs and accepted by --tensor-type
    ggml_name: str = ""
    #: ggml itself refuses to quantize without an imatrix (ggml_quantize_requires_imatrix)
    requires_imatrix: bool = False
    #: llama-quantize refuses to write this type without imatrix data (tensor_requires_imatrix)
    quantize_requires_imatrix: bool = False
    #: whether the imatrix changes the result at all
    uses_imatrix: bool = True
    #: ggml_is_quantized(): False for F32/F16/BF16
    is_quantized: bool = True
    #: type used when a row length is not a multiple of block_size (llama.cpp's fallback table), or None
    fallback: str | None = None
    #: preferred replacement when imatrix data is missing and the user asked to upgrade (--on-missing-imatrix)
    imatrix_free: str | None = None
    target: str = DEFAULT_TARGET
    #: bytes at the start of every row, before its blocks (ik_llama.cpp's row-scaled types keep a scale there)
    row_meta_size: int = 0
    description: str = ""
    #: name of the plugin that registered it (filled in by the registrar)
    plugin: str = ""
    #: a row-interleaved type (ik_llama.cpp's ``_R4``/``_R8``): ``(rows, base type)`` — its codec takes rows in
    #: groups of ``rows``; a tensor whose row count is not a multiple of it, and a token embedding (looked up row by
    #: row), get the base type instead, as ik's llama-quantize does
    interleave: tuple[int, str] | None = None

    def __attrs_post_init__(self) -> None:
        if self.block_size <= 0 or self.type_size <= 0 or self.row_meta_size < 0:
            raise ValueError(f"{self.name}: block_size and type_size must be positive")
        if not self.ggml_name:
            object.__setattr__(self, "ggml_name", self.name.lower())

    @property
    def bits_per_weight(self) -> float:
        return self.type_size * 8 / self.block_size

    @property
    def row_group(self) -> int:
        """Rows quantized together (ggml's ``nrows`` trait): the interleave's, else 1.  Work units and codec calls
        are cut at multiples of it."""
        return self.interleave[0] if self.interleave else 1

    def fits(self, n_per_row: int) -> bool:
        return n_per_row % self.block_size == 0

    def row_bytes(self, n_per_row: int) -> int:
        if not self.fits(n_per_row):
            raise ValueError(
                f"{self.name}: row length {n_per_row} is not a multiple of the block size {self.block_size}"
            )
        return n_per_row // self.block_size * self.type_size + self.row_meta_size

    def load_codec(self) -> Any:
        return load_object(self.codec)


@attrs.frozen
class Strategy:
    """A search strategy: how a block's scale(s) and quants are chosen.

    A ``native`` strategy (``ggml``) asks each type for its own reference search.  Any other strategy maps each
    problem kind it solves to a solver, a ``"module:attr"`` reference to a callable ``solve(problem) ->
    BlockSolution``.
    """

    name: str
    solvers: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping, validator=_check_refs,
                                             eq=False, hash=False)
    native: bool = False
    #: per block, keep the type's own (``ggml``) result where its importance-weighted error is smaller
    keeps_native: bool = False
    description: str = ""
    plugin: str = ""

    def __attrs_post_init__(self) -> None:
        if not self.native and not self.solvers:
            raise ValueError(f"strategy {self.name}: a non-native strategy needs solvers")

    @property
    def solves(self) -> tuple[str, ...]:
        return tuple(self.solvers)

    def supports(self, qtype: QuantType) -> bool:
        if self.native or not qtype.is_quantized:
            return True
        return any(kind in self.solvers for kind in qtype.problems)

    def solve(self, problem: Any) -> Any:
        """Solve a :class:`BlockProblem` with this strategy's solver for its kind."""
        return load_object(self.solvers[problem.kind])(problem)


@attrs.frozen
class Target:
    """A runtime files are written for: ``ggml`` (llama.cpp), or a fork with types of its own (ik_llama.cpp).

    A target has its own types (``QuantType.target``), and those of its ``base`` but the ones it ``exclude``s;
    ``codecs`` replaces the codec of a base type where the fork's own quantizer writes other bytes.  How the fork's
    quantize tool lays a file out: ``tensor_order`` ``"layer"`` (llama.cpp's llama-quantize processes and writes
    tensors by layer number, then name) or ``"file"`` (the input's order, as ik_llama.cpp's); ``kv_style``
    ``"llama.cpp"`` or ``"ik_llama.cpp"`` (see :func:`qf.metadata.output_kvs`)."""

    name: str
    base: str | None = None
    exclude: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    codecs: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping, validator=_check_refs,
                                            eq=False, hash=False)
    description: str = ""
    plugin: str = ""
    tensor_order: str = attrs.field(default="layer", validator=attrs.validators.in_(("layer", "file")))
    kv_style: str = attrs.field(default="llama.cpp", validator=attrs.validators.in_(("llama.cpp", "ik_llama.cpp")))


@attrs.frozen
class ExecutorSpec:
    """Where work units run: ``runner`` names a :class:`qf.execute.Executor` subclass; ``default`` marks the one
    used when none is asked for."""

    name: str
    runner: str = attrs.field(validator=_check_ref)
    default: bool = False
    description: str = ""
    plugin: str = ""

    def load(self) -> Any:
        return load_object(self.runner)


@attrs.frozen
class ImatrixEngine:
    """A forward pass ``qf imatrix`` can collect activations with.

    ``runner`` names a callable ``(run: qf_arches.imatrix.engines.EngineRun) -> CollectResult`` that runs the model
    over the chunks and fills ``run.stats``; ``available`` a callable ``() -> str | None`` (None: usable here, else
    why not, e.g. a missing optional dependency); ``handles`` a callable ``(arch) -> bool`` (it runs models whose
    ``general.architecture`` is ``arch``).  ``--engine auto`` tries the engines by ascending ``auto_rank`` (None: never
    chosen by auto).  ``runs_mtp``: it can run MTP/NextN draft heads (``--mtp``)."""

    name: str
    runner: str = attrs.field(validator=_check_ref)
    available: str = attrs.field(validator=_check_ref)
    handles: str = attrs.field(validator=_check_ref)
    auto_rank: int | None = None
    runs_mtp: bool = False
    description: str = ""
    plugin: str = ""

    def run(self, run: Any) -> Any:
        return load_object(self.runner)(run)

    def why_unavailable(self) -> str | None:
        return load_object(self.available)()

    def can_run(self, arch: str) -> bool:
        return bool(load_object(self.handles)(arch))


@attrs.frozen
class ArchFacts:
    """What the planner and the mix rules need to know about a model (llama.cpp's hparams as llama-quantize sees
    them)."""

    arch: str  # general.architecture
    n_layer_all: int = 0  # block_count, MTP/NextN layers included
    n_nextn: int = 0  # trailing MTP/NextN layers
    n_expert: int = 0
    n_gqa: int = 0  # n_head / n_head_kv of layer 0 (integer division), 0 if unknown
    model_type: str = ""  # e.g. "70B": llama.cpp's LLM_TYPE where a rule depends on it
    #: name substrings never quantized (llama.cpp's tensor_allows_quantization list and the arch's own)
    never_quantized: tuple[str, ...] = ()
    #: whole names never quantized
    never_quantized_names: tuple[str, ...] = ()


@attrs.frozen
class Arch:
    """What an architecture plugin tells the planner about a model family.

    ``gguf_names`` are the ``general.architecture`` values it handles; ``"*"`` marks the generic fallback.
    ``facts`` names a callable ``(metadata: dict, tensors: list[TensorInfo]) -> ArchFacts`` (None: the generic
    architecture's); ``forward`` (optional) names the numpy forward pass used by ``qf imatrix``; ``rules`` are mix
    rules (TOML text, see qf_plugins.presets.mix) that take precedence over the preset's for models of this
    architecture.
    """

    name: str
    gguf_names: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    facts: str | None = attrs.field(default=None, validator=_check_ref)
    forward: str | None = attrs.field(default=None, validator=_check_ref)
    rules: str = ""
    description: str = ""
    plugin: str = ""


@attrs.frozen
class Preset:
    """An ftype as llama-quantize names it (Q4_0, Q4_K_M, COPY ...): a default type and a mix of rules."""

    name: str
    file_type: int  # llama_ftype written to general.file_type
    default_type: str  # quant type name
    #: name of the mix (rule set) applied on top of the default type; None = the same type everywhere
    mix: str | None = None
    #: the ftype name the mix rules see (aliases: Q4_K -> Q4_K_M); defaults to ``name``
    mix_as: str | None = None
    #: types that need imatrix data in this preset beyond their own requirement (Q2_K in Q2_K_S)
    imatrix_required: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    description: str = ""
    #: COPY: copy every tensor as it is
    only_copy: bool = False
    target: str = DEFAULT_TARGET
    plugin: str = ""

    @property
    def ftype(self) -> str:
        return self.mix_as or self.name


@attrs.frozen(eq=False)
class BlockProblem:
    """A batch of independent blocks to fit, as a type poses it to a generic strategy.

    ``x`` and ``w`` are float32 ``(n_blocks, block_size)``; for ``symmetric``/``asymmetric`` the quants are integers
    in ``[qmin, qmax]``; for ``table`` they index ``table`` (float32, ascending).  ``w`` is the importance the type
    wants minimised, Σw(x − x̂)²; ``offset_max`` bounds the offset ``m`` of an asymmetric fit (K-quants store
    x ≈ d·q − dmin·mn with mn >= 0, so their offset must not be positive).
    """

    kind: str
    x: Any
    w: Any
    qmin: int = 0
    qmax: int = 0
    table: Any = None
    offset_max: float = float("inf")


@attrs.frozen(eq=False)
class BlockSolution:
    """Scale ``d`` (and offset ``m`` for asymmetric problems) per block and the chosen quants ``q``."""

    d: Any
    q: Any
    m: Any = None
