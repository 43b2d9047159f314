"""One rule for comparing qf's collected imatrix with a llama.cpp build's (golden files or a live run).

Counts must be equal and sums agree to float32 accumulation tolerance (SUM_RTOL; see tests/test_collect.py), with
one exception: the synthetic qwen3moe model has one token in blk.1 and one in blk.3 on a routing near-tie (a gap of
3e-5 between the 2nd and 3rd expert), and which way a build routes them depends on its last float bits — the golden
build, and llama-cpp-python 0.3.36 on some machines, route them the other way from qf.  Then two experts of those
layers swap one token each (those experts are not comparable) and every later layer sees slightly different
activations, so from the first moved layer on the sums are compared loosely.
"""

from __future__ import annotations

import numpy as np

SUM_RTOL = 2e-3
QWEN3MOE_NEAR_TIES = {"blk.1", "blk.3"}
DIVERGED_RTOL = 0.1


def relative(a, b):
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return np.abs(a - b) / np.maximum(np.abs(b), 1e-30)


def _layer(name: str) -> int:
    return int(name.split(".")[1]) if name.startswith("blk.") else -1


def compare_imatrix(arch: str, ours: dict, ref: dict, *, near_tie_moves: tuple[int, ...] = (0, 2)) -> float:
    """``ours``/``ref``: name -> (sums, counts).  ``near_tie_moves``: how many token moves the near-tie layers may
    show (2 = the build routed both near-tie tokens the other way).  Returns the worst strict relative difference."""
    assert sorted(ours) == sorted(ref)
    same = {}
    for name, (sums, counts) in ref.items():
        mine_sums, mine_counts = ours[name]
        assert mine_sums.size == sums.size and mine_counts.size == counts.size, name
        counts, mine_counts = np.asarray(counts).ravel(), np.asarray(mine_counts).ravel()
        moved = np.abs(mine_counts - counts)
        if arch == "qwen3moe" and ".".join(name.split(".")[:2]) in QWEN3MOE_NEAR_TIES and "_exps" in name:
            assert moved.sum() in near_tie_moves and moved.max(initial=0) <= 1, f"{name}: {moved}"
            assert mine_counts.sum() == counts.sum(), name
        else:
            np.testing.assert_array_equal(mine_counts, counts, err_msg=name)
        same[name] = moved == 0
    diverged_from = min((_layer(n) for n, s in same.items() if not s.all()), default=None)
    worst = 0.0
    for name, (sums, _) in ref.items():
        keep = same[name]
        rows = ours[name][0].reshape(keep.size, -1)[keep], sums.reshape(keep.size, -1)[keep]
        rel = relative(*rows).max(initial=0.0)
        if diverged_from is not None and _layer(name) >= diverged_from:
            assert rel < DIVERGED_RTOL, f"{name}: {rel:.3g}"
        else:
            worst = max(worst, rel)
            assert rel <= SUM_RTOL, f"{name}: worst relative difference {rel:.3g} > {SUM_RTOL}"
    return worst
