"""Mixes: which type each tensor gets under an ftype, as ordered, declarative rules.

A mix is data (TOML): a list of ``[[rule]]`` tables — first match wins — and ``[[adjust]]`` tables applied, in order,
to the type the rules chose.  Each names the ``role`` it applies to, optionally the ftypes it applies to (``ftypes`` /
``not_ftypes``), a condition ``when`` (see qf_plugins.presets.expr) and the resulting ``type`` (``"default"`` = the
preset's type)::

    [[rule]]
    role = "attn_v"
    ftypes = ["Q4_K_M", "Q5_K_M"]
    when = "use_more_bits(i, n)"
    type = "Q6_K"

Roles are llama.cpp's tensor categories: ``output`` (output.weight, and token_embd when the embeddings are tied),
``token_embd``, ``attn_v`` (attn_v, attn_qkv, attn_kv_b), ``attn_k``, ``attn_q``, ``attn_output``, ``ffn_down``,
``ffn_gate``, ``ffn_up``, ``other``; ``"*"`` is every role but output.

Names a condition can use: ``i``/``n`` (for attn_v: the running attn_v counter and the attn_v count; for ffn_*: the
layer — parsed from the name for MoE models — and the layer count incl. MTP layers), ``count`` (the role's running
counter), ``n_gqa``, ``n_expert``, ``has_imatrix``, ``arch``, ``model_type``, ``ncols``, ``ne2``, ``qk`` (block size
of the default type), ``default``, ``ftype``, ``role``, ``name``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from qf.errors import PlanError, UsageError
from qf.names import category, layer_of
from qf.recipe import parse_toml
from qf.values import ArchFacts
from qf_plugins.presets.expr import Expr

ROLES = ("output", "token_embd", "attn_v", "attn_k", "attn_q", "attn_output", "ffn_down", "ffn_gate", "ffn_up",
         "other")
COUNTED = ("attn_v", "ffn_down", "ffn_gate", "ffn_up")


def role_of(cat: str, tied_embeddings: bool) -> str:
    if cat == "output" or (tied_embeddings and cat == "token_embd"):
        return "output"
    if cat in ("attn_qkv", "attn_kv_b"):
        return "attn_v"
    return cat


@attrs.frozen
class MixRule:
    roles: tuple[str, ...]
    type: str
    when: Expr | None = attrs.field(default=None, eq=False)
    ftypes: tuple[str, ...] = ()
    not_ftypes: tuple[str, ...] = ()
    from_types: tuple[str, ...] = ()  # adjust only: applies when the chosen type is one of these
    source: str = ""

    def applies(self, role: str, ftype: str) -> bool:
        if "*" in self.roles:
            if role == "output":
                return False
        elif role not in self.roles:
            return False
        if self.ftypes and ftype not in self.ftypes:
            return False
        return ftype not in self.not_ftypes

    def describe(self) -> str:
        cond = f" when {self.when.text}" if self.when is not None else ""
        return f"{self.source}: {'/'.join(self.roles)}{cond} -> {self.type}"


@attrs.frozen
class Mix:
    name: str
    rules: tuple[MixRule, ...]
    adjusts: tuple[MixRule, ...] = ()
    plugin: str = ""

    @classmethod
    def from_toml(cls, name: str, text: str, where: str) -> Mix:
        data = parse_toml(text, where)
        groups = data.get("group", {})
        return cls(name, tuple(parse_rules(data.get("rule", []), where, groups)),
                   tuple(parse_rules(data.get("adjust", []), where, groups, adjust=True)))

    def start(self, facts: ArchFacts, ftype: str, default: str, qk: int, has_imatrix: bool, names: list[str],
              arch_rules: str | None = None, arch_name: str = "") -> MixState:
        """The planner's entry point (the interface a registered mix offers): this mix evaluated over one model's
        tensors ``names`` in processing order, the arch plugin's own rules (TOML text) tried first."""
        extra = Mix.from_toml(f"{arch_name}-rules", arch_rules, f"arch plugin {arch_name!r}").rules \
            if arch_rules else ()
        return MixState(self, facts, ftype, default, qk, has_imatrix, names, extra)


def parse_rules(items: list[dict], where: str, groups: Mapping[str, list[str]] = (), adjust: bool = False
                ) -> Iterator[MixRule]:
    """``[[rule]]`` / ``[[adjust]]`` tables -> MixRule.  ``ftypes`` entries naming a ``[group]`` expand to it."""
    groups = dict(groups or {})
    known = {"role", "type", "when", "ftypes", "not_ftypes", "from"}
    for index, item in enumerate(items):
        here = f"{where} {'adjust' if adjust else 'rule'} #{index + 1}"
        unknown = set(item) - known
        if unknown:
            raise UsageError(f"{here}: unknown key(s) {', '.join(sorted(unknown))}")
        if "type" not in item or "role" not in item:
            raise UsageError(f"{here}: needs 'role' and 'type'")
        roles = (item["role"],) if isinstance(item["role"], str) else tuple(item["role"])
        bad = [r for r in roles if r != "*" and r not in ROLES]
        if bad:
            raise UsageError(f"{here}: unknown role(s) {bad}; roles: {', '.join(ROLES)}, *")

        def expand(names: list[str]) -> tuple[str, ...]:
            out: list[str] = []
            for n in names:
                out.extend(groups.get(n, [n]))
            return tuple(out)

        when = Expr(item["when"], here) if item.get("when") else None
        yield MixRule(roles, item["type"], when, expand(item.get("ftypes", [])), expand(item.get("not_ftypes", [])),
                      tuple(item.get("from", [])), here)


class _Names(Mapping[str, Any]):
    """Lazy names for rule conditions: a fact is computed only if a condition uses it."""

    def __init__(self, values: dict[str, Any], lazy: dict[str, Any]) -> None:
        self._values = values
        self._lazy = lazy

    def __getitem__(self, key: str) -> Any:
        if key not in self._values:
            if key not in self._lazy:
                raise KeyError(key)
            self._values[key] = self._lazy[key]()
        return self._values[key]

    def __iter__(self):
        return iter({**self._lazy, **self._values})

    def __len__(self) -> int:
        return len(set(self._values) | set(self._lazy))


class MixState:
    """Evaluates a mix over the tensors of one model, in processing order (llama.cpp's running counters)."""

    def __init__(self, mix: Mix, facts: ArchFacts, ftype: str, default: str, qk: int, has_imatrix: bool,
                 names: list[str], extra_rules: tuple[MixRule, ...] = ()) -> None:
        self.mix = mix
        self.rules = extra_rules + mix.rules
        self.facts = facts
        self.ftype = ftype
        self.default = default
        self.qk = qk
        self.has_imatrix = has_imatrix
        self.tied = "output.weight" not in names
        self.n_attention_wv = sum(1 for n in names if role_of(category(n), False) == "attn_v")
        self.counters = dict.fromkeys(COUNTED, 0)

    def _layer(self, role: str, name: str) -> int:
        """llama.cpp's layer_info: the running counter, or for MoE models the layer in the name."""
        if max(1, self.facts.n_expert) > 1:
            layer = layer_of(name)
            if layer < 0 and not name.startswith("blk.-"):
                raise PlanError(f"failed to determine the layer of tensor {name!r}")
            if not 0 <= layer < self.facts.n_layer_all:
                raise PlanError(f"bad layer {layer} for tensor {name!r}: must be in [0, {self.facts.n_layer_all})")
            return layer
        return self.counters[role]

    def choose(self, name: str, ncols: int, ne2: int) -> tuple[str, str]:
        """(type name or "default", the rule that decided) for one quantizable tensor; advances the counters."""
        role = role_of(category(name), self.tied)
        f = self.facts
        values = {"role": role, "name": name, "ncols": ncols, "ne2": ne2, "qk": self.qk, "default": self.default,
                  "ftype": self.ftype, "has_imatrix": self.has_imatrix, "arch": f.arch, "model_type": f.model_type,
                  "n_gqa": f.n_gqa, "n_expert": f.n_expert, "count": self.counters.get(role, 0)}
        lazy: dict[str, Any] = {}
        if role == "attn_v":
            values["i"], values["n"] = self.counters["attn_v"], self.n_attention_wv
        elif role in COUNTED:
            lazy["i"] = lambda: self._layer(role, name)
            values["n"] = f.n_layer_all
        names = _Names(values, lazy)
        chosen, why = "default", f"ftype {self.ftype}"
        for rule in self.rules:
            if rule.applies(role, self.ftype) and (rule.when is None or rule.when(names)):
                chosen, why = rule.type, rule.describe()
                break
        for adjust in self.mix.adjusts:
            current = self.default if chosen == "default" else chosen
            if adjust.applies(role, self.ftype) and (not adjust.from_types or current in adjust.from_types) and (
                    adjust.when is None or adjust.when(names)):
                chosen, why = adjust.type, f"{why}; {adjust.describe()}"
        if role in COUNTED:
            self.counters[role] += 1
        return chosen, why
