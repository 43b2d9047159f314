"""qf.app.knapsack: size parsing and the multiple-choice knapsack."""

import itertools
import random

import pytest

from qf.app.knapsack import Candidate, Item, hull, parse_bpw, parse_size, parse_types, solve
from qf.errors import UsageError


@pytest.mark.parametrize("text, expected", [
    ("1000", 1000), ("95MiB", 95 * 2**20), ("4.2GB", 4_200_000_000), ("4.2 gb", 4_200_000_000), ("1.5KiB", 1536),
    (12345, 12345), ("0.5x", 500),
])
def test_parse_size(text, expected):
    assert parse_size(text, input_bytes=1000) == expected


@pytest.mark.parametrize("text", ["", "abc", "-5MB", "0", "5 parsecs", "1e999"])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError):
        parse_size(text, input_bytes=1000)


def test_parse_bpw_and_types():
    assert parse_bpw("4.5") == 4.5
    with pytest.raises(UsageError):
        parse_bpw("x")
    with pytest.raises(UsageError):
        parse_bpw(0)
    assert parse_types("Q4_K, Q6_K,Q4_K") == ("Q4_K", "Q6_K")


def test_hull_drops_dominated_and_concave_points():
    cands = [Candidate("a", 10, 10.0), Candidate("b", 20, 9.9), Candidate("c", 30, 1.0), Candidate("d", 25, 20.0)]
    assert hull(cands) == [0, 2]


def _brute(items, budget):
    best = None
    for combo in itertools.product(*[range(len(it.candidates)) for it in items]):
        size = sum(it.candidates[j].size for it, j in zip(items, combo))
        loss = sum(it.candidates[j].loss for it, j in zip(items, combo))
        if size <= budget and (best is None or loss < best):
            best = loss
    return best


@pytest.mark.parametrize("seed", range(30))
def test_solve_never_over_budget_and_near_optimal(seed):
    rng = random.Random(seed)
    items = []
    for n in range(6):
        cands, size, loss = [], rng.randint(5, 20), rng.uniform(1, 10)
        for j in range(rng.randint(1, 4)):
            cands.append(Candidate(f"t{j}", size, loss))
            size += rng.randint(1, 15)
            loss *= rng.uniform(0.1, 0.9)
        items.append(Item(f"x{n}", tuple(cands)))
    low = sum(min(c.size for c in it.candidates) for it in items)
    high = sum(max(c.size for c in it.candidates) for it in items)
    budget = rng.randint(low, high)
    sol = solve(items, budget)
    assert sol.size <= budget
    assert sol.size == sum(it.candidates[sol.choice[it.name]].size for it in items)
    best = _brute(items, budget)
    assert sol.loss <= best * 1.5 + 1e-9  # greedy on the hull + fill: near the exact optimum on tiny cases


def test_solve_many_small_items_fills_the_budget():
    rng = random.Random(1)
    items = [Item(f"x{n}", tuple(Candidate(t, s, l) for t, s, l in
                                 (("lo", 100 + n, 1.0 + n % 7), ("mid", 180 + n, 0.3), ("hi", 300 + n, 0.01))))
             for n in range(300)]
    rng.shuffle(items)
    budget = 100_000
    sol = solve(items, budget)
    assert budget * 0.995 <= sol.size <= budget


def test_solve_below_the_smallest_mix_is_an_error():
    with pytest.raises(UsageError, match="smallest mix"):
        solve([Item("x", (Candidate("a", 10, 1.0),))], 5)
