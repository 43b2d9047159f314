"""Manual type rules and where they come from: ``--tensor-type``, ``--tensor-type-file`` and recipe files.

A recipe is a quantization described in TOML, versionable and reviewable::

    # my-model.recipe.toml
    extends = "Q4_K_M"                 # the ftype preset the recipe starts from
    strategy = "ggml"                  # default search strategy
    token_embedding_type = "Q8_0"      # like --token-embedding-type
    output_tensor_type = "Q6_K"        # like --output-tensor-type
    pure = false                       # like --pure
    mtp_types = true                   # like --mtp-types
    on_missing_imatrix = "upgrade"     # like --on-missing-imatrix

    [[rule]]                           # ordered: the first rule whose regex matches wins
    match = 'blk\\.\\d+\\.ffn_down_exps'  # Python regex, re.search, CASE-SENSITIVE (unlike --tensor-type)
    type = "IQ3_S"
    strategy = "exhaustive"            # optional, for the tensors this rule matches
    imatrix = "ignore"                 # optional: "use" (default) or "ignore"

The settings a recipe accepts are the options marked ``recipe`` in :class:`qf.options.QuantizeOptions`.  Recipe rules
come after ``--tensor-type`` rules given on the command line.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import attrs

from qf.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RULE_KEYS = {"match": str, "type": str, "strategy": str, "imatrix": str}


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
        except (re.error, RecursionError, OverflowError) as exc:
            pos = f" at position {exc.pos}" if getattr(exc, "pos", None) is not None else ""
            reason = getattr(exc, "msg", exc)
            raise UsageError(f"{self.source}: invalid regex {self.pattern!r}: {reason}{pos}") from None
        object.__setattr__(self, "regex", compiled)
        if self.imatrix not in (None, "use", "ignore"):
            raise UsageError(f"{self.source}: imatrix must be 'use' or 'ignore', not {self.imatrix!r}")

    def matches(self, name: str) -> bool:
        return self.regex.search(name) is not None

    def describe(self) -> str:
        return f"{self.source} {self.pattern}={self.type_name}"


def parse_tensor_type(spec: str, source: str = "--tensor-type", lower: bool = True) -> TypeRule:
    """``PATTERN=TYPE`` as llama-quantize's ``--tensor-type`` takes it (the pattern lower-cased; ik_llama.cpp's
    ``--custom-q`` keeps its case: ``lower=False``)."""
    pattern, sep, type_name = spec.partition("=")
    if not sep:
        raise UsageError(f"{source}: malformed tensor type {spec!r} (expected PATTERN=TYPE)")
    if not pattern:
        raise UsageError(f"{source}: missing tensor name pattern in {spec!r}")
    if not type_name:
        raise UsageError(f"{source}: missing quantization type in {spec!r}")
    return TypeRule(pattern.lower() if lower else pattern, type_name, source)


def read_text(path: str | os.PathLike[str], what: str) -> str:
    """A small UTF-8 text file the user named (a recipe, a rule file), or one line saying why it cannot be read."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot read: {exc.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path}: not UTF-8 text (byte {exc.start})") from None


def load_tensor_type_file(path: str | os.PathLike[str]) -> list[TypeRule]:
    """``--tensor-type-file``: whitespace-separated ``PATTERN=TYPE`` entries."""
    source = f"--tensor-type-file {path}"
    return [parse_tensor_type(token, source) for token in read_text(path, "--tensor-type-file").split()]


def parse_toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        last_line = text.rstrip().count("\n") + 1
        message = str(exc).replace("(at end of document)", f"(at end of document, line {last_line})")
        raise UsageError(f"{where}: TOML syntax error: {message}") from None


@attrs.frozen
class Recipe:
    path: Path
    settings: dict[str, Any]  # recipe key -> value, as written (checked by qf.options)
    rules: tuple[TypeRule, ...]


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read a recipe: its settings as written, and its rules."""
    path = Path(path)
    text = read_text(path, "recipe")
    data = parse_toml(text, f"recipe {path}")
    rule_lines = [i + 1 for i, line in enumerate(text.splitlines()) if re.match(r"\s*\[\[\s*rule\s*\]\]", line)]
    values = {key: value for key, value in data.items() if key != "rule"}
    items = data.get("rule", [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise UsageError(f"recipe {path}: 'rule' must be [[rule]] tables")
    rules = []
    for index, item in enumerate(items):
        line = rule_lines[index] if index < len(rule_lines) else "?"
        where = f"recipe {path}:{line} (rule #{index + 1})"
        unknown = set(item) - set(RULE_KEYS)
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(RULE_KEYS)})")
        if "match" not in item or "type" not in item:
            raise UsageError(f"{where}: a rule needs 'match' and 'type'")
        for key, value in item.items():
            if not isinstance(value, RULE_KEYS[key]):
                raise UsageError(f"{where}: {key} must be a string, not {type(value).__name__} {value!r}")
        rules.append(TypeRule(item["match"], item["type"], source=where, strategy=item.get("strategy"),
                              imatrix=item.get("imatrix")))
    return Recipe(path, values, tuple(rules))
