"""A tiny, safe expression language for rule conditions in presets and recipes.

    when = "n_gqa >= 4 and not has_imatrix"
    when = "use_more_bits(i, n) or i < n // 16"

Supported: names, numbers, strings, ``and``/``or``/``not``, comparisons (incl. ``in``), ``+ - * // %`` (integer
division and remainder follow C, as llama.cpp computes them), lists/tuples, and whitelisted functions.  Names are
looked up lazily in a mapping, so a fact that is expensive or may fail is only computed when a rule needs it.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

from qf.errors import UsageError


def c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def c_mod(a: int, b: int) -> int:
    return a - b * c_div(a, b)


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits(i_layer, n_layers)."""
    return i < c_div(n, 8) or i >= c_div(7 * n, 8) or c_mod(i - c_div(n, 8), 3) == 2


FUNCTIONS: dict[str, Callable[..., Any]] = {"use_more_bits": use_more_bits, "min": min, "max": max}

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: c_div,
           ast.Mod: c_mod}
_CMPOPS = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
           ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
           ast.NotIn: lambda a, b: a not in b}


class Expr:
    """A compiled condition; ``Expr(text)(names)`` evaluates it against a mapping of names."""

    def __init__(self, text: str, where: str = "condition") -> None:
        self.text = text
        try:
            self.tree = ast.parse(text, mode="eval").body
        except SyntaxError as exc:
            raise UsageError(f"{where}: invalid expression {text!r} at column {exc.offset}: {exc.msg}") from None
        self._check(self.tree, where)

    def _check(self, node: ast.AST, where: str) -> None:
        allowed = (ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare, ast.BinOp, ast.Name,
                   ast.Load, ast.Constant, ast.Call, ast.Tuple, ast.List, *_BINOPS, *_CMPOPS)
        for child in ast.walk(node):
            if not isinstance(child, allowed):
                raise UsageError(f"{where}: {type(child).__name__} is not allowed in {self.text!r}")
            if isinstance(child, ast.Call) and not (isinstance(child.func, ast.Name) and child.func.id in FUNCTIONS):
                raise UsageError(f"{where}: only {', '.join(FUNCTIONS)} may be called in {self.text!r}")

    def __call__(self, names: Mapping[str, Any]) -> Any:
        return self._eval(self.tree, names)

    def names(self) -> set[str]:
        return {n.id for n in ast.walk(self.tree) if isinstance(n, ast.Name) and n.id not in FUNCTIONS}

    def _eval(self, node: ast.AST, names: Mapping[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            try:
                return names[node.id]
            except KeyError:
                raise UsageError(f"unknown name {node.id!r} in {self.text!r}") from None
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                return all(self._eval(v, names) for v in node.values)
            return any(self._eval(v, names) for v in node.values)
        if isinstance(node, ast.UnaryOp):
            value = self._eval(node.operand, names)
            return (not value) if isinstance(node.op, ast.Not) else -value
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](self._eval(node.left, names), self._eval(node.right, names))
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, names)
            for op, comparator in zip(node.ops, node.comparators):
                right = self._eval(comparator, names)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, (ast.Tuple, ast.List)):
            return tuple(self._eval(e, names) for e in node.elts)
        if isinstance(node, ast.Call):
            return FUNCTIONS[node.func.id](*(self._eval(a, names) for a in node.args))
        raise UsageError(f"cannot evaluate {ast.dump(node)}")  # unreachable after _check

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"
