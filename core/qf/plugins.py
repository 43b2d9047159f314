"""Plugin loading and the registry of everything plugins register.

Plugins come from the ``qf`` entry-point group (qf's built-ins included).  ``QF_LOAD_PLUGINS=a,b`` limits loading to
the named entry points, ``QF_DISABLE_PLUGINS=a,b`` skips some.  A plugin that fails to import is recorded in
:attr:`Registry.failures` (with its entry point and distribution) and the others keep working.
"""

from __future__ import annotations

import os
import threading
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any

import attrs
import pluggy

from qf import hookspecs
from qf.errors import PluginError, UnknownNameError, UsageError
from qf.gguf_io.constants import GGMLQuantizationType
from qf.gguf_io.reader import gguf_sizes
from qf.values import (
    DEFAULT_TARGET,
    Arch,
    ExecutorSpec,
    ImatrixEngine,
    Preset,
    ProblemKind,
    QuantType,
    Strategy,
    Target,
)

ENTRY_POINT_GROUP = "qf"


@attrs.frozen
class PluginInfo:
    name: str
    entry_point: str
    hooks: tuple[str, ...]
    #: the entry point it came from (None for in-process plugins): its distribution is read only when asked for
    #: (reading distribution metadata costs a few ms per plugin, on every run)
    ep: metadata.EntryPoint | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def distribution(self) -> str:
        return _distribution(self.ep)[0] if self.ep is not None else "(registered in-process)"

    @property
    def version(self) -> str:
        return _distribution(self.ep)[1] if self.ep is not None else ""


@attrs.frozen
class PluginFailure:
    entry_point: str
    distribution: str
    error: str

    def message(self) -> str:
        return f"plugin {self.entry_point!r} from distribution {self.distribution!r} failed to load: {self.error}"


#: what each registration hook registers: (hook, kind as users read it, Registry table)
_REGISTRATIONS = (
    ("qf_register_problem_kinds", "problem kind", "problem_kinds"),
    ("qf_register_targets", "target", "targets"),
    ("qf_register_quant_types", "quant type", "quant_types"),
    ("qf_register_strategies", "strategy", "strategies"),
    ("qf_register_arches", "architecture", "arches"),
    ("qf_register_presets", "preset", "presets"),
    ("qf_register_executors", "executor", "executors"),
    ("qf_register_imatrix_engines", "imatrix engine", "imatrix_engines"),
)
_TABLES = {kind: table for _, kind, table in _REGISTRATIONS} | {"mix": "mixes"}


@attrs.define(eq=False)
class Registry:
    """Everything the plugins registered.  Lookups are case-insensitive and raise :class:`UnknownNameError`."""

    problem_kinds: dict[str, ProblemKind] = attrs.field(factory=dict)
    targets: dict[str, Target] = attrs.field(factory=dict)
    quant_types: dict[str, QuantType] = attrs.field(factory=dict)
    strategies: dict[str, Strategy] = attrs.field(factory=dict)
    arches: dict[str, Arch] = attrs.field(factory=dict)
    presets: dict[str, Preset] = attrs.field(factory=dict)
    executors: dict[str, ExecutorSpec] = attrs.field(factory=dict)
    imatrix_engines: dict[str, ImatrixEngine] = attrs.field(factory=dict)
    mixes: dict[str, Any] = attrs.field(factory=dict)
    plugins: list[PluginInfo] = attrs.field(factory=list)
    failures: list[PluginFailure] = attrs.field(factory=list)
    plugin_manager: pluggy.PluginManager | None = None

    # -- lookups ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _find(table: dict[str, Any], kind: str, name: str) -> Any:
        if not isinstance(name, str):
            raise UsageError(f"{kind} must be given by name, not {type(name).__name__} {name!r}")
        if name in table:
            return table[name]
        folded = name.casefold()
        for key, value in table.items():
            if key.casefold() == folded:
                return value
        known = ", ".join(sorted(table)) or "none registered"
        raise UnknownNameError(f"unknown {kind} {name!r} (known: {known})")

    def quant_type(self, name: str, target: str | None = None) -> QuantType:
        """A type by name (or llama.cpp's spelling: q4_K, iq2_xxs); with ``target``, as that target has it."""
        try:
            qtype = self._find(self.quant_types, "quant type", name)
        except UnknownNameError:
            qtype = next((q for q in self.quant_types.values() if q.ggml_name.casefold() == name.casefold()), None)
            if qtype is None:
                raise
        return qtype if target is None else self._in_target(qtype, target)

    def types_of(self, target: str = DEFAULT_TARGET) -> dict[str, QuantType]:
        """The types a target's runtime reads: its own, and its base's but those it excludes or whose id one of its own
        takes, with the target's codecs."""
        t = self.target(target)
        own = {q.name: q for q in self.quant_types.values() if q.target == t.name}
        own_ids = {q.type_id for q in own.values()}
        base = self.types_of(t.base) if t.base else {}
        types = {name: q for name, q in base.items() if name not in t.exclude and q.type_id not in own_ids}
        for name, ref in t.codecs.items():
            if name in types:
                types[name] = attrs.evolve(types[name], codec=ref)
        return types | own

    def _in_target(self, qtype: QuantType, target: str) -> QuantType:
        found = self.types_of(target).get(qtype.name)
        if found is None:
            raise UsageError(f"quant type {qtype.name} is not available for target {target!r}"
                             f" (it is a {qtype.target!r} type: see --target)")
        return found

    def quant_type_by_id(self, type_id: int, target: str = DEFAULT_TARGET) -> QuantType | None:
        return next((q for q in self.types_of(target).values() if q.type_id == type_id), None)

    def problem_kind(self, name: str) -> ProblemKind:
        return self._find(self.problem_kinds, "problem kind", name)

    def target(self, name: str) -> Target:
        return self._find(self.targets, "target", name)

    def strategy(self, name: str) -> Strategy:
        return self._find(self.strategies, "strategy", name)

    def native_strategy(self) -> Strategy:
        """The strategy that runs each type's own reference search (qf's default: llama.cpp's bytes)."""
        native = [s for s in self.strategies.values() if s.native]
        if len(native) != 1:
            raise PluginError(f"expected exactly one native strategy, found {len(native)}"
                              f" ({', '.join(s.name for s in native) or 'none'})")
        return native[0]

    def searchable(self, qtype: QuantType) -> bool:
        """Does some generic (non-native) strategy solve a problem ``qtype`` poses?"""
        return any(s.supports(qtype) for s in self.strategies.values() if not s.native) and qtype.is_quantized

    def executor(self, name: str | None = None) -> ExecutorSpec:
        """An executor by name, or the default one."""
        if name is not None:
            return self._find(self.executors, "executor", name)
        default = next((e for e in self.executors.values() if e.default), None)
        if default is None:
            raise PluginError("no default executor is registered")
        return default

    def imatrix_engine(self, name: str) -> ImatrixEngine:
        return self._find(self.imatrix_engines, "imatrix engine", name)

    def auto_imatrix_engines(self, mtp: bool = False) -> list[ImatrixEngine]:
        """The engines ``qf imatrix --engine auto`` tries, in order: ascending ``auto_rank`` (None: never tried), with
        ``mtp`` those that run MTP/NextN heads first."""
        return sorted((e for e in self.imatrix_engines.values() if e.auto_rank is not None),
                      key=lambda e: (mtp and not e.runs_mtp, e.auto_rank, e.name))

    def preset(self, name: str) -> Preset:
        return self._find(self.presets, "ftype", name)

    def preset_by_id(self, file_type: int) -> Preset | None:
        """The first preset with this llama_ftype number (llama-quantize accepts numeric ftypes)."""
        return next((p for p in self.presets.values() if p.file_type == file_type), None)

    def mix(self, name: str):
        return self._find(self.mixes, "mix", name)

    def arch_for(self, gguf_arch: str) -> Arch:
        """The architecture plugin handling ``general.architecture == gguf_arch`` (else the ``*`` fallback)."""
        arch = next((a for a in self.arches.values() if gguf_arch in a.gguf_names), None) or self.generic_arch()
        if arch is None:
            raise UnknownNameError(
                f"no architecture plugin handles {gguf_arch!r} and no generic fallback is registered"
            )
        return arch

    def generic_arch(self) -> Arch | None:
        return next((a for a in self.arches.values() if "*" in a.gguf_names), None)

    def type_sizes(self, target: str = DEFAULT_TARGET):
        """A ``type_id -> (block size, bytes per block[, bytes of row metadata]) | None`` lookup for
        :meth:`qf.gguf_io.GGUFFile.open`: the target's registered types first, then gguf's table."""
        sizes = {q.type_id: (q.block_size, q.type_size) + ((q.row_meta_size,) if q.row_meta_size else ())
                 for q in self.types_of(target).values()}
        return lambda type_id: sizes.get(type_id) or gguf_sizes(type_id)

    def type_label(self, type_id: int, target: str = DEFAULT_TARGET) -> str:
        qtype = self.quant_type_by_id(type_id, target)
        if qtype is not None:
            return qtype.ggml_name
        try:
            return GGMLQuantizationType(type_id).name.lower()
        except ValueError:
            return f"type{type_id}"

    def validate(self) -> None:
        """Cross-plugin consistency, checked once everything is registered: every problem kind a type poses or a
        strategy solves is registered, every type names a registered target."""
        for q in self.quant_types.values():
            for kind in q.problems:
                if kind not in self.problem_kinds:
                    raise PluginError(f"plugin {q.plugin!r}: quant type {q.name} poses the unregistered problem kind"
                                      f" {kind!r} (registered: {', '.join(self.problem_kinds) or 'none'})")
            if q.target not in self.targets:
                raise PluginError(f"plugin {q.plugin!r}: quant type {q.name} names the unregistered target"
                                  f" {q.target!r}")
        for s in self.strategies.values():
            for kind in s.solvers:
                if kind not in self.problem_kinds:
                    raise PluginError(f"plugin {s.plugin!r}: strategy {s.name} solves the unregistered problem kind"
                                      f" {kind!r} (registered: {', '.join(self.problem_kinds) or 'none'})")


class Registrar:
    """Handed to the registration hooks; records which plugin registered what."""

    def __init__(self, registry: Registry, plugin: str) -> None:
        self._registry = registry
        self.plugin = plugin

    def _add(self, kind: str, value: Any) -> Any:
        table: dict[str, Any] = getattr(self._registry, _TABLES[kind])
        clash = next((v for k, v in table.items() if k.casefold() == value.name.casefold()), None)
        if clash is not None:
            raise PluginError(
                f"{kind} {value.name!r} is registered twice: by plugin {clash.plugin!r} and by plugin {self.plugin!r}"
            )
        value = attrs.evolve(value, plugin=self.plugin)
        table[value.name] = value
        return value

    def add_problem_kind(self, kind: ProblemKind) -> ProblemKind:
        return self._add("problem kind", kind)

    def add_target(self, target: Target) -> Target:
        return self._add("target", target)

    def add_quant_type(self, qtype: QuantType) -> QuantType:
        if qtype.target == DEFAULT_TARGET:  # gguf's table describes llama.cpp's types
            known = gguf_sizes(qtype.type_id)
            if known is not None and known != (qtype.block_size, qtype.type_size):
                raise PluginError(
                    f"plugin {self.plugin!r}: quant type {qtype.name} (id {qtype.type_id})"
                    f" declares block {qtype.block_size}"
                    f" / {qtype.type_size} bytes, but gguf's GGML_QUANT_SIZES says {known[0]} / {known[1]}"
                )
        clash = next((q for q in self._registry.quant_types.values()
                      if q.type_id == qtype.type_id and q.target == qtype.target), None)
        if clash is not None:
            raise PluginError(
                f"ggml type id {qtype.type_id} is registered twice for target {qtype.target!r}: as {clash.name} by"
                f" plugin {clash.plugin!r} and as {qtype.name} by plugin {self.plugin!r}"
            )
        return self._add("quant type", qtype)

    def add_strategy(self, strategy: Strategy) -> Strategy:
        return self._add("strategy", strategy)

    def add_arch(self, arch: Arch) -> Arch:
        return self._add("architecture", arch)

    def add_preset(self, preset: Preset) -> Preset:
        return self._add("preset", preset)

    def add_executor(self, executor: ExecutorSpec) -> ExecutorSpec:
        return self._add("executor", executor)

    def add_imatrix_engine(self, engine: ImatrixEngine) -> ImatrixEngine:
        return self._add("imatrix engine", engine)

    def add_mix(self, mix) -> Any:
        """Register a mix: a rule set presets refer to by name, with ``start(facts, ftype, default, qk, has_imatrix,
        names, arch_rules, arch_name)`` returning an object whose ``choose(name, ncols, ne2)`` gives (type or
        "default", why) tensor by tensor and whose ``tied`` says whether token_embd is the output (see
        :class:`qf_plugins.presets.mix.Mix`)."""
        return self._add("mix", mix)


def _env_list(name: str) -> set[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _entry_points() -> Iterator[metadata.EntryPoint]:
    wanted = _env_list("QF_LOAD_PLUGINS")
    disabled = _env_list("QF_DISABLE_PLUGINS") or set()
    seen: set[str] = set()
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in seen:  # the same distribution visible twice on sys.path
            continue
        seen.add(ep.name)
        if (wanted is not None and ep.name not in wanted) or ep.name in disabled:
            continue
        yield ep


def _distribution(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"], dist.version


def build_registry(extra_plugins: Iterable[tuple[str, Any]] = (), load_entry_points: bool = True) -> Registry:
    """Load plugins and run their registration hooks.  ``extra_plugins`` are ``(name, object)`` pairs (tests)."""
    pm = pluggy.PluginManager("qf")
    pm.add_hookspecs(hookspecs)
    registry = Registry(plugin_manager=pm)
    origins: dict[str, tuple[metadata.EntryPoint | None, str]] = {}

    if load_entry_points:
        for ep in _entry_points():
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
            except Exception as exc:  # noqa: BLE001 - any import-time failure is reported, not raised
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                registry.failures.append(PluginFailure(f"{ep.name} = {ep.value}", _distribution(ep)[0], detail))
                continue
            origins[ep.name] = (ep, ep.value)
    for name, plugin in extra_plugins:
        pm.register(plugin, name=name)
        origins[name] = (None, repr(plugin))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) if getattr(exc, "plugin", None) is not None else "?"
        raise PluginError(f"plugin {name!r}: {exc}") from None

    for hook_name, _kind, _table in _REGISTRATIONS:
        # call each implementation with its own registrar so every registration is attributed to its plugin
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            kwargs = {"registrar": Registrar(registry, impl.plugin_name)}
            try:
                impl.function(*[kwargs[arg] for arg in impl.argnames])
            except (TypeError, ValueError) as exc:  # an invalid value (attrs validators raise these)
                raise PluginError(f"plugin {impl.plugin_name!r}: {hook_name}: {exc}") from None
    registry.validate()

    for name, (ep, value) in origins.items():
        plugin = pm.get_plugin(name)
        hooks = tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or ()))
        registry.plugins.append(PluginInfo(name, value, hooks, ep))
    return registry


_lock = threading.Lock()
_registry: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry (built on first use)."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = build_registry()
        return _registry


def reset_registry() -> None:
    global _registry
    with _lock:
        _registry = None


@contextmanager
def registered(*plugins: tuple[str, Any]) -> Iterator[Registry]:
    """Temporarily add in-process plugins to the global registry (for tests)."""
    global _registry
    with _lock:
        saved = _registry
        _registry = build_registry(extra_plugins=plugins)
        current = _registry
    try:
        yield current
    finally:
        with _lock:
            _registry = saved
