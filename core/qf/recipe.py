"""Recipe files: a quantization described in TOML, versionable and reviewable.

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

Recipe rules come after ``--tensor-type`` rules given on the command line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import attrs

from qf.errors import UsageError
from qf.mix import parse_toml
from qf.plan import ON_MISSING_IMATRIX, TypeRule

SETTINGS = {"extends": str, "strategy": str, "token_embedding_type": str, "output_tensor_type": str, "pure": bool,
            "mtp_types": bool, "on_missing_imatrix": str}
RULE_KEYS = {"match", "type", "strategy", "imatrix"}


@attrs.frozen
class Recipe:
    path: Path
    settings: dict
    rules: tuple[TypeRule, ...]


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"recipe {path}: cannot read: {exc.strerror}") from None
    data = parse_toml(text, f"recipe {path}")
    rule_lines = [i + 1 for i, line in enumerate(text.splitlines()) if re.match(r"\s*\[\[\s*rule\s*\]\]", line)]
    settings = {}
    for key, value in data.items():
        if key == "rule":
            continue
        if key not in SETTINGS:
            raise UsageError(f"recipe {path}: unknown setting {key!r} (known: {', '.join(SETTINGS)}, [[rule]])")
        if not isinstance(value, SETTINGS[key]):
            raise UsageError(f"recipe {path}: {key} must be a {SETTINGS[key].__name__}")
        settings[key] = value
    if settings.get("on_missing_imatrix", "error") not in ON_MISSING_IMATRIX:
        raise UsageError(f"recipe {path}: on_missing_imatrix must be one of {', '.join(ON_MISSING_IMATRIX)}")
    rules = []
    for index, item in enumerate(data.get("rule", [])):
        line = rule_lines[index] if index < len(rule_lines) else "?"
        where = f"recipe {path}:{line} (rule #{index + 1})"
        unknown = set(item) - RULE_KEYS
        if unknown:
            raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(RULE_KEYS)})")
        if "match" not in item or "type" not in item:
            raise UsageError(f"{where}: a rule needs 'match' and 'type'")
        rules.append(TypeRule(item["match"], item["type"], source=where, strategy=item.get("strategy"),
                              imatrix=item.get("imatrix")))
    return Recipe(path, settings, tuple(rules))
