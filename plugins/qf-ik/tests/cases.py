"""Random test inputs for comparing qf_ik with ik_llama.cpp: several distributions, with and without an imatrix,
plus edge rows.  Row counts are multiples of 4 (the _R4 types need that)."""

from __future__ import annotations

import numpy as np

DISTRIBUTIONS = ("normal", "heavy", "uniform", "outliers", "sparse", "edge")


def _rows(rng: np.random.Generator, kind: str, rows: int, n: int) -> np.ndarray:
    if kind == "normal":
        x = rng.standard_normal((rows, n)) * 0.02
    elif kind == "heavy":
        x = rng.standard_t(2.5, (rows, n)) * 0.01
    elif kind == "uniform":
        x = rng.uniform(-1, 1, (rows, n))
    elif kind == "outliers":
        x = rng.standard_normal((rows, n)) * 0.02
        idx = rng.integers(0, x.size, max(1, x.size // 50))
        x.flat[idx] *= rng.uniform(10, 100, len(idx))
    elif kind == "sparse":
        x = rng.standard_normal((rows, n)) * (rng.random((rows, n)) < 0.1)
    else:  # edge rows: zeros, constants, tiny, huge, one spike, ±0, ramps, half-zero
        x = rng.standard_normal((rows, n)) * 0.02
        specials = [
            np.zeros(n), np.full(n, 0.5), np.full(n, -3.0), rng.standard_normal(n) * 1e-20,
            rng.standard_normal(n) * 1e4, np.where(np.arange(n) == n // 3, 1.0, 0.0),
            np.where(np.arange(n) % 2 == 0, 0.0, -0.0), np.linspace(-1, 1, n),
            np.where(np.arange(n) < n // 2, 0.0, rng.standard_normal(n)), rng.standard_normal(n) * 1e-8,
            np.where(np.arange(n) % 16 == 0, 1e3, 1e-3), np.full(n, 1e-30),
        ]
        for i in range(rows):
            x[i] = specials[(i + int(rng.integers(0, len(specials)))) % len(specials)]
    return x.astype(np.float32)


def _imatrix(rng: np.random.Generator, n: int, zeros: bool) -> np.ndarray:
    w = rng.lognormal(0.0, 1.5, n)
    if zeros:
        w[rng.random(n) < 0.1] = 0.0
        w[rng.integers(0, n, 4)] = 1e6
    return w.astype(np.float32)


def random_cases(seed: int, n_per_row: int = 512, rows: int = 8):
    """[(name, x, imatrix or None)]: each distribution without and with an imatrix (the edge rows also with an
    imatrix holding zeros and spikes)."""
    rng = np.random.default_rng(seed)
    out = []
    for kind in DISTRIBUTIONS:
        x = _rows(rng, kind, rows, n_per_row)
        out.append((f"{kind}", x, None))
        out.append((f"{kind}_imat", x, _imatrix(rng, n_per_row, zeros=kind in ("edge", "sparse"))))
    return out
