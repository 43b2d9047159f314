"""One options object for a quantization: :class:`QuantizeOptions`.

Each option is declared once, as a field with its command-line flag, help and recipe key; the CLI builds its
``qf quantize`` options from these fields, recipes accept the fields marked ``recipe``, the Python API
(``qf.quantize_file(..., pure=True)``) takes them as keywords, and the planner reads the object.  Options a user did
not give are ``None``; :func:`resolve` merges the recipe under what the user gave, fills in defaults, and turns every
rule source (``--tensor-type``, ``--tensor-type-file``, recipe rules) into ordered :class:`qf.recipe.TypeRule` values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

import attrs

from qf.errors import UsageError
from qf.recipe import TypeRule, load_recipe, load_tensor_type_file, parse_tensor_type
from qf.values import DEFAULT_TARGET

ON_MISSING_IMATRIX = ("error", "upgrade", "allow")


def parse_layers(spec: str) -> tuple[int, ...]:
    """``--prune-layers 1,5,7``: layer numbers, sorted, each once."""
    layers = []
    for part in spec.split(","):
        if not re.fullmatch(r"[0-9]+", part.strip()):
            raise UsageError(f"--prune-layers: invalid layer id {part!r}")
        layers.append(int(part))
    return tuple(sorted(set(layers)))


@attrs.frozen
class OptionSpec:
    """How an option is given: ``flags`` on the command line (none: positional or API only), its ``help``, the value
    ``kind`` (bool flag, str, int, path; ``multiple`` for repeatable ones), ``choices``, and whether a recipe may set
    it (``recipe``: the recipe key, or None)."""

    flags: tuple[str, ...] = ()
    help: str = ""
    kind: type = str
    multiple: bool = False
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    recipe: str | None = None
    default: Any = None
    #: for an option given on the command line as one string but held otherwise (``--prune-layers 1,2``)
    parse: Callable[[str], Any] | None = None


def option(default: Any = None, *, flags: tuple[str, ...] = (), help: str = "", kind: type = str,
           multiple: bool = False, choices: tuple[str, ...] = (), metavar: str | None = None, recipe: bool = False,
           recipe_key: str | None = None, effective: Any = None, parse: Callable[[str], Any] | None = None) -> Any:
    """An options field.  ``default`` is what the field holds when not given (None for options a recipe may set);
    ``effective`` the value :func:`resolve` uses then."""
    spec = OptionSpec(tuple(flags), help, kind, multiple, tuple(choices), metavar,
                      recipe_key if recipe_key else (None if not recipe else ""), effective, parse)
    converter = tuple if multiple else None
    return attrs.field(default=default, converter=converter, metadata={"qf": spec}, kw_only=True)


@attrs.frozen
class QuantizeOptions:
    """What the user asked for: llama-quantize's options and qf's own."""

    ftype: str | None = option(recipe=True, recipe_key="extends",
                               help="The llama-quantize ftype (preset) to start from (positional on the CLI).")
    strategy: str | None = option(flags=("--strategy",), recipe=True,
                                  help="Search strategy (default ggml = llama.cpp's bytes; see `qf list-strategies`).")
    target: str | None = option(flags=("--target",), recipe=True, effective=DEFAULT_TARGET,
                                help="The runtime the file is for: ggml (llama.cpp, default) or one a plugin adds.")
    imatrix: str | None = option(flags=("--imatrix",), kind=os.PathLike, metavar="FILE",
                                 help="Importance matrix (GGUF or legacy .dat).")
    allow_requantize: bool = option(False, flags=("--allow-requantize",), kind=bool,
                                    help="Allow quantized input tensors (dequantized first).")
    leave_output_tensor: bool = option(False, flags=("--leave-output-tensor",), kind=bool,
                                       help="Do not quantize output.weight.")
    pure: bool | None = option(flags=("--pure",), kind=bool, recipe=True, effective=False,
                               help="Default type for every quantized tensor (no ftype mix).")
    output_tensor_type: str | None = option(flags=("--output-tensor-type",), recipe=True,
                                            help="Type for output.weight.")
    token_embedding_type: str | None = option(flags=("--token-embedding-type",), recipe=True,
                                              help="Type for token_embd.weight.")
    tensor_types: tuple[str, ...] = option((), flags=("--tensor-type",), multiple=True, metavar="RE=TYPE",
                                           help="Type for tensors whose name matches regex RE (lower-cased; first"
                                                " match wins). Repeatable.")
    custom_q: tuple[str, ...] = option((), flags=("--custom-q",), multiple=True, metavar="RE=TYPE,RE=TYPE",
                                       help="ik_llama.cpp's rules: comma-separated RE=TYPE, regex case-sensitive,"
                                            " first match wins (after --tensor-type rules). Repeatable.")
    tensor_type_file: str | None = option(flags=("--tensor-type-file",), kind=os.PathLike, metavar="FILE",
                                          help="File of whitespace-separated RE=TYPE entries (after --tensor-type"
                                               " rules).")
    recipe: str | None = option(flags=("--recipe",), kind=os.PathLike, metavar="FILE",
                                help="TOML recipe: preset base, ordered case-sensitive rules, per-rule strategy"
                                     " (see README).")
    include_weights: tuple[str, ...] = option((), flags=("--include-weights",), multiple=True,
                                              help="Use imatrix entries whose name contains this. Repeatable.")
    exclude_weights: tuple[str, ...] = option((), flags=("--exclude-weights",), multiple=True,
                                              help="Ignore imatrix entries whose name contains this. Repeatable.")
    override_kv: tuple[str, ...] = option((), flags=("--override-kv",), multiple=True, metavar="KEY=TYPE:VALUE",
                                          help="Set a metadata key. Repeatable.")
    prune_layers: tuple[int, ...] = option((), flags=("--prune-layers",), kind=int, multiple=True, parse=parse_layers,
                                           metavar="L1,L2,...", help="Drop these layers (and renumber the rest).")
    keep_split: bool = option(False, flags=("--keep-split",), kind=bool,
                              help="Write as many split files as the input has.")
    on_missing_imatrix: str | None = option(flags=("--on-missing-imatrix",), choices=ON_MISSING_IMATRIX,
                                            recipe=True, effective="error",
                                            help="Tensors whose type needs imatrix data they lack: error (default;"
                                                 " all listed before any work), upgrade to the nearest type that"
                                                 " needs none, or allow (where ggml itself can).")
    mtp_types: bool | None = option(flags=("--mtp-types",), kind=bool, recipe=True, effective=False,
                                    help="Type MTP/NextN heads like what they mirror (eh_proj, shared_head_head like"
                                         " output.weight; embed_tokens like token_embd). Default: llama.cpp's"
                                         " choice.")
    strict_shapes: bool = option(False, flags=("--no-fallback",), kind=bool,
                                 help="Fail instead of falling back to another type when a row length does not fit"
                                      " the block size.")
    dry_run: bool = option(False, flags=("--dry-run",), kind=bool,
                           help="Print the plan (types, reasons, sizes) and write nothing.")
    executor: str | None = option(flags=("--executor",),
                                  help="Where the work runs (see `qf plugins`; default: threads in this process).")
    executor_options: tuple[str, ...] = option((), flags=("--executor-option",), multiple=True, metavar="KEY=VALUE",
                                               help="An option for the executor (e.g. scheduler=tcp://host:8786)."
                                                    " Repeatable.")
    scheduler: str | None = option(flags=("--scheduler",), metavar="ADDR",
                                   help="A Dask scheduler (tcp://host:8786) to run on: implies --executor dask.")
    split_max_size: str | None = option(flags=("--split-max-size",), metavar="N(M|G)",
                                        help="Write a split set as llama.cpp's gguf-split --split-max-size does"
                                             " (M = 1000^2 bytes, G = 1000^3 of tensor data per file).")
    split_max_tensors: int | None = option(flags=("--split-max-tensors",), kind=int, metavar="N",
                                           help="Write a split set of at most N tensors per file, as llama.cpp's"
                                                " gguf-split --split-max-tensors does.")
    estimate: bool = option(False, flags=("--estimate",), kind=bool,
                            help="With --dry-run: the CPU time the plan needs per tensor group and the wall time"
                                 " on N workers of C cores (kernel throughput measured on a few rows).")
    no_space_check: bool = option(False, flags=("--no-space-check",), kind=bool,
                                  help="Do not refuse to start when the output's file system lacks room for it.")
    target_size: Any = option(flags=("--target-size",), kind=object, metavar="SIZE",
                              help="Choose each free tensor's type for the least predicted quality loss with the"
                                   " output file at most SIZE (within 0.5%): bytes, 95MiB, 4.2GB, or 0.31x of the"
                                   " input.  Rules the user wrote are kept (see README).")
    target_bpw: Any = option(flags=("--target-bpw",), kind=object, metavar="BPW",
                             help="Like --target-size, for bits per weight of the tensor data.")
    target_types: Any = option(flags=("--target-types",), kind=object, recipe=True, metavar="T1,T2,...",
                               help="Candidate types for --target-size/--target-bpw (default: a K-quant + legacy"
                                    " ladder, IQ types too with an imatrix).")
    sensitivity: str | None = option(flags=("--sensitivity",), kind=os.PathLike, metavar="FILE",
                                     help="Per-tensor sensitivities from `qf sensitivity` for --target-*"
                                          " (default: every tensor's relative error weighs the same, the output"
                                          " head's 100 times more).")
    target_sample_rows: int | None = option(flags=("--target-sample-rows",), kind=int, metavar="N",
                                            help="Rows sampled per tensor to measure each candidate's error"
                                                 " (default 128, at most 1/8 of a tensor's rows and at least 32;"
                                                 " 0 = all rows).")
    target_cache: str | None = option(flags=("--target-cache",), kind=str, metavar="DIR",
                                      help="Where measured errors are kept for later --target-* runs on the same"
                                           " model, imatrix and strategy (default $XDG_CACHE_HOME/qf; 'off': none).")
    target_full_search: bool = option(False, flags=("--target-full-search",), kind=bool,
                                      help="Measure every candidate type on every free tensor (default: the slow"
                                           " IQ2_*/IQ3_* grid searches only where the first choice lands near"
                                           " their bits per weight).")
    #: ready rules (Python API), tried after those of --tensor-type/--tensor-type-file and before the recipe's
    rules: tuple[TypeRule, ...] = option((), multiple=True)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> QuantizeOptions:
        """From keyword arguments (the Python API): unknown names and wrong value types are a :class:`UsageError`."""
        names = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise UsageError(f"unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
        for f in attrs.fields(cls):
            if f.name in kwargs and kwargs[f.name] is not None:
                kwargs[f.name] = _checked(f, kwargs[f.name])
        return cls(**kwargs)


def _shown(value: Any, limit: int = 80) -> str:
    """A value for an error message: its repr, cut to ``limit`` characters (huge ints are not even converted)."""
    if isinstance(value, int) and value.bit_length() > 256:
        return f"<an integer of {value.bit_length()} bits>"
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_pair(item: Any) -> bool:
    return isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item)


def _checked(field: attrs.Attribute, value: Any) -> Any:
    spec: OptionSpec = field.metadata["qf"]
    items = value if spec.multiple else (value,)
    if spec.multiple and (isinstance(value, (str, bytes)) or not hasattr(value, "__iter__")):
        raise UsageError(f"option {field.name}: expected a list, got {type(value).__name__} {value!r}")
    if field.name == "tensor_types":  # the API also takes (pattern, type) pairs
        items = value = tuple(f"{item[0]}={item[1]}" if _is_pair(item) else item for item in items)
    for item in items:
        if field.name == "rules":
            ok = isinstance(item, TypeRule)
        elif spec.kind is os.PathLike:
            ok = isinstance(item, (str, os.PathLike))
        elif spec.kind is int:
            ok = isinstance(item, int) and not isinstance(item, bool)
        else:
            ok = isinstance(item, spec.kind)
        if not ok:
            raise UsageError(f"option {field.name}: expected {spec.kind.__name__}, got {type(item).__name__}"
                             f" {_shown(item)}")
        if spec.choices and item not in spec.choices:
            raise UsageError(f"option {field.name}: must be one of {', '.join(spec.choices)}, not {_shown(item)}")
    if spec.kind is os.PathLike:
        return os.fspath(value)
    return value


def recipe_settings() -> dict[str, attrs.Attribute]:
    """Recipe key -> the options field it sets."""
    out = {}
    for f in attrs.fields(QuantizeOptions):
        key = f.metadata["qf"].recipe
        if key is not None:
            out[key or f.name] = f
    return out


def _recipe_values(path: str, settings: dict[str, Any]) -> dict[str, Any]:
    """A recipe's settings as options values (field name -> value), each checked like the option it sets."""
    fields = recipe_settings()
    values = {}
    for key, value in settings.items():
        if key not in fields:
            raise UsageError(f"recipe {path}: unknown setting {key!r} (known: {', '.join(fields)}, [[rule]])")
        try:
            values[fields[key].name] = _checked(fields[key], value)
        except UsageError as exc:
            raise UsageError(f"recipe {path}: {key}: {exc.one_line().split(': ', 1)[1]}") from None
    return values


def resolve(options: QuantizeOptions) -> QuantizeOptions:
    """The options with the recipe merged in (what the user gave wins), defaults filled in, and every rule source
    turned into ``rules``: ``--tensor-type`` (pattern lower-cased, as llama-quantize does), ``--tensor-type-file``,
    the ``rules`` given, then the recipe's."""
    settings: dict[str, Any] = {}
    recipe_rules: tuple[TypeRule, ...] = ()
    if options.recipe is not None:
        recipe = load_recipe(options.recipe)
        settings, recipe_rules = _recipe_values(options.recipe, recipe.settings), recipe.rules
    values: dict[str, Any] = {}
    for f in attrs.fields(QuantizeOptions):
        spec: OptionSpec = f.metadata["qf"]
        value = getattr(options, f.name)
        if value is None and spec.recipe is not None:
            value = settings.get(f.name)
        if value is None:
            value = spec.default
        values[f.name] = value
    if values["ftype"] is None:
        raise UsageError("no ftype given (on the command line, or `extends` in the recipe)")
    if values["include_weights"] and values["exclude_weights"]:
        raise UsageError("--include-weights and --exclude-weights cannot be used together")
    rules = [parse_tensor_type(spec) for spec in options.tensor_types]
    rules += [parse_tensor_type(item, "--custom-q", lower=False) for spec in options.custom_q
              for item in spec.split(",") if item]
    if options.tensor_type_file is not None:
        rules += load_tensor_type_file(options.tensor_type_file)
    values["rules"] = (*rules, *options.rules, *recipe_rules)
    values["tensor_types"], values["custom_q"], values["tensor_type_file"] = (), (), None
    return QuantizeOptions(**values)
