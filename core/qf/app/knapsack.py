"""Size targets: parsing ``--target-size``/``--target-bpw`` and choosing each tensor's type under a byte budget.

The choice is a multiple-choice knapsack: every free tensor ``t`` has candidates ``c`` with an exact size ``b[t, c]``
(bytes, padded to the file's alignment for a file-size target) and a predicted loss ``l[t, c]``; pick one candidate
per tensor to minimise ``sum l`` subject to ``sum b <= budget``.

Method (:func:`solve`): the Lagrangian relaxation.  For a multiplier ``lam`` each tensor independently minimises
``l + lam * b``; the minimisers as ``lam`` falls trace each tensor's lower convex hull in the (size, loss) plane, so
the relaxation is solved exactly by sorting all hull segments by their slope (loss saved per byte) and taking them
greedily while they fit.  That optimum is exact for the budgets it lands on (the hull vertices); the gap to the
budget is then filled by a second pass that takes any remaining upgrade (hull or not, best loss saved per byte first)
that still fits, so the result is never over the budget and, with many small tensors, within a fraction of a
percent of it.  The greedy-on-hull solution is optimal for the relaxed (fractional) problem; the integer solution
is off by at most one tensor's step, which the fill pass mostly recovers.  This is O(N log N) in the number of
candidates — a DP over bytes would be exact but needs the budget discretised and is far slower for GB models.

This module names no quant type: candidates come from the app layer (:mod:`qf.app.target`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import attrs

from qf.errors import UsageError

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*|x)\s*$")


def parse_size(text: str | int | float, input_bytes: int | None = None) -> int:
    """``--target-size``: a plain number is bytes; ``95MiB``, ``4.2GB`` (SI and binary units, case-insensitive),
    ``0.31x`` a fraction of the input's size.  Returns whole bytes (rounded down)."""
    if isinstance(text, bool):
        raise UsageError(f"--target-size: invalid size {text!r}")
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        m = _SIZE.match(str(text))
        if m is None:
            raise UsageError(f"--target-size: invalid size {text!r} (a number of bytes, 95MiB, 4.2GB or 0.31x)")
        value, unit = float(m.group(1)), m.group(2).lower()
    if unit == "x":
        if input_bytes is None:
            raise UsageError("--target-size: a fraction of the input needs the input's size")
        size = value * input_bytes
    elif unit in _UNITS:
        size = value * _UNITS[unit]
    else:
        raise UsageError(f"--target-size: unknown unit {unit!r} in {text!r} (B, kB, MB, GB, KiB, MiB, GiB or x)")
    if not math.isfinite(size) or size <= 0:
        raise UsageError(f"--target-size: must be positive, not {text!r}")
    return int(size)


def parse_bpw(text: str | int | float) -> float:
    """``--target-bpw``: bits per weight of the tensor data (as the plan summary counts them), in (0, 64]."""
    try:
        value = float(text) if not isinstance(text, bool) else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or not 0 < value <= 64:
        raise UsageError(f"--target-bpw: expected bits per weight in (0, 64], not {text!r}")
    return value


def parse_types(text: str | Sequence[str]) -> tuple[str, ...]:
    """``--target-types Q4_K,Q6_K``: names, each once, in the order given."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = tuple(dict.fromkeys(s.strip() for s in items if s.strip()))
    if not names:
        raise UsageError("--target-types: no type given")
    return names


@attrs.frozen
class Candidate:
    type_name: str
    size: int  # bytes the tensor takes (padded for a file-size target)
    loss: float  # predicted loss contribution


@attrs.frozen
class Item:
    """One free tensor and its candidates (at least one)."""
    name: str
    candidates: tuple[Candidate, ...]


@attrs.frozen
class Solution:
    choice: dict[str, int]  # item name -> index into its candidates
    size: int
    loss: float
    lam: float  # the multiplier (loss per byte) of the last hull step taken; 0 if every item is at its best


def hull(cands: Sequence[Candidate]) -> list[int]:
    """Indices of the lower convex hull of (size, loss), by increasing size and strictly decreasing loss."""
    order = sorted(range(len(cands)), key=lambda i: (cands[i].size, cands[i].loss))
    pts: list[int] = []
    for i in order:
        if pts and cands[i].loss >= cands[pts[-1]].loss:
            continue  # not better than a smaller candidate: dominated
        while len(pts) >= 2:
            a, b = cands[pts[-2]], cands[pts[-1]]
            c = cands[i]
            # b lies on or above the segment a-c: not on the lower hull
            if (b.loss - a.loss) * (c.size - a.size) >= (c.loss - a.loss) * (b.size - a.size):
                pts.pop()
            else:
                break
        pts.append(i)
    return pts


def solve(items: Sequence[Item], budget: int) -> Solution:
    """The least-loss choice with total size <= ``budget`` (see the module docstring).  A budget below the smallest
    choice is a :class:`UsageError` naming the reachable range."""
    hulls = {it.name: hull(it.candidates) for it in items}
    by_name = {it.name: it for it in items}
    choice = {it.name: hulls[it.name][0] for it in items}
    size = sum(by_name[n].candidates[i].size for n, i in choice.items())
    top = sum(by_name[n].candidates[h[-1]].size for n, h in hulls.items())
    if size > budget:
        raise UsageError(f"target below the smallest mix: the free tensors need at least {size} bytes with these"
                         f" candidate types, {budget} available")
    steps = []  # (slope, name, position on the hull)
    for name, h in hulls.items():
        cands = by_name[name].candidates
        for k in range(1, len(h)):
            a, b = cands[h[k - 1]], cands[h[k]]
            steps.append(((a.loss - b.loss) / (b.size - a.size), name, k))
    steps.sort(key=lambda s: (-s[0], s[1], s[2]))
    pos = {name: 0 for name in hulls}
    lam = 0.0
    blocked: set[str] = set()
    for slope, name, k in steps:
        if name in blocked or pos[name] != k - 1:
            continue
        cands = by_name[name].candidates
        delta = cands[hulls[name][k]].size - cands[hulls[name][k - 1]].size
        if size + delta > budget:
            blocked.add(name)  # later steps of this tensor depend on this one
            continue
        size += delta
        pos[name] = k
        choice[name] = hulls[name][k]
        lam = slope
    # fill: any upgrade (not only hull steps) that still fits, most loss saved per byte first, repeated
    improved = size < budget and size < top
    while improved:
        improved = False
        best = None
        for it in items:
            cur = it.candidates[choice[it.name]]
            for j, c in enumerate(it.candidates):
                extra = c.size - cur.size
                gain = cur.loss - c.loss
                if gain > 0 and size + extra <= budget:
                    score = gain / extra if extra > 0 else math.inf
                    if best is None or score > best[0]:
                        best = (score, it.name, j, extra)
        if best is not None:
            _, name, j, extra = best
            choice[name] = j
            size += extra
            improved = True
    loss = sum(by_name[n].candidates[i].loss for n, i in choice.items())
    return Solution(choice, size, loss, lam)


def max_size(items: Sequence[Item]) -> int:
    """The size of the largest-loss-free choice (each item at its largest hull point)."""
    return sum(max(it.candidates[i].size for i in hull(it.candidates)) for it in items)
