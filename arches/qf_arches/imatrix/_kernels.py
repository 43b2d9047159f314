"""Accumulation kernels for importance matrices: Σx² per column, in llama-imatrix's float32 order.

llama-imatrix adds ``x[j]*x[j]`` (float32, no FMA) row by row into a float32 accumulator, in the order the rows reach
its callback.  Reproducing that order (not just the sum) keeps qf's sums within rounding noise of llama.cpp's.
"""

from __future__ import annotations

import numpy as np

from qf.kernels import jit


@jit
def accumulate_rows(acc, x, rows):
    """acc (ne0,) += x[r]² for r in rows, in that order (x: (n, ne0) float32)."""
    ne0 = x.shape[1]
    for i in range(rows.shape[0]):
        r = rows[i]
        for j in range(ne0):
            v = x[r, j]
            acc[j] += v * v


@jit
def accumulate_experts(acc, counts, x, ids, order, bounds):
    """mul_mat_id's order: per ubatch, per slot, per row: acc[ids[row, slot]] += x[row, slot % x.shape[1]]².

    acc (n_expert, ne0) float32, counts (n_expert,) int64, x (n, n_x, ne0) float32, ids (n, k) int32, ``order`` row
    indices ubatch by ubatch, ``bounds`` the ubatch boundaries in ``order`` (len n_ubatch + 1).
    """
    ne0 = x.shape[2]
    n_x = x.shape[1]
    k = ids.shape[1]
    for u in range(bounds.shape[0] - 1):
        for slot in range(k):
            for i in range(bounds[u], bounds[u + 1]):
                r = order[i]
                e = ids[r, slot]
                counts[e] += 1
                xs = slot % n_x
                for j in range(ne0):
                    v = x[r, xs, j]
                    acc[e, j] += v * v


def squares_reference(x: np.ndarray) -> np.ndarray:
    """Σx² over rows in float64 (for tests)."""
    return (x.astype(np.float64) ** 2).sum(axis=0)
