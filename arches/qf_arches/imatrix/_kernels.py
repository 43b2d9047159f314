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


@jit
def accumulate_mul_mat(acc, x, ne, st, src0_ne2, src0_ne3):
    """llama-imatrix's ``mul_mat`` loop on a strided float32 ``src1``: for i3, i2, row (in that order)
    ``acc[mat] += x²`` with ``mat = (i3 % src0_ne3) * src0_ne2 + i2 % src0_ne2``.

    acc (n_mat, ne0) float32; ``x`` the flat float32 memory from ``src1``'s first element; ``ne`` its 4 sizes and
    ``st`` its strides in elements (``st[0]`` is 1).  Returns False when an accumulator is no longer finite."""
    ne0 = ne[0]
    for i3 in range(ne[3]):
        for i2 in range(ne[2]):
            a = acc[(i3 % src0_ne3) * src0_ne2 + (i2 % src0_ne2)]
            for row in range(ne[1]):
                xs = x[row * st[1] + i2 * st[2] + i3 * st[3]:]
                for j in range(ne0):
                    v = xs[j]
                    a[j] += v * v
    for m in range(acc.shape[0]):
        a = acc[m]
        for j in range(ne0):
            if not np.isfinite(a[j]):
                return False
    return True


@jit
def accumulate_mul_mat_id(acc, counts, x, ne0, ne11, st1, st2, ids, ids_st0, ids_st1, n_ids, n_tokens):
    """llama-imatrix's ``mul_mat_id`` loop: for each slot ``idx``, each token ``row``: expert ``ex = ids[row, idx]``,
    ``counts[ex] += 1``, ``acc[ex] += src1[row, idx % ne11]²``.

    acc (n_as, ne0) float32, counts (n_as,) int64, ``x`` flat float32 from src1's first element with strides ``st1``
    (ne1) and ``st2`` (tokens) in elements, ``ids`` flat int32 with strides ``ids_st0`` (slot), ``ids_st1`` (token).
    Returns -1 when all is well, ``n_as + 1`` when an expert id is out of range, or the id of an expert whose
    accumulator is no longer finite."""
    n_as = acc.shape[0]
    touched = np.zeros(n_as, np.uint8)
    for idx in range(n_ids):
        for row in range(n_tokens):
            ex = ids[row * ids_st1 + idx * ids_st0]
            if ex < 0 or ex >= n_as:
                return n_as + 1
            xs = x[(idx % ne11) * st1 + row * st2:]
            a = acc[ex]
            counts[ex] += 1
            touched[ex] = 1
            for j in range(ne0):
                v = xs[j]
                a[j] += v * v
    for ex in range(n_as):
        if touched[ex]:
            a = acc[ex]
            for j in range(ne0):
                if not np.isfinite(a[j]):
                    return ex
    return -1


@jit
def log_softmax_nll(logits, targets, out):
    """llama-imatrix's ``log_softmax``: per row, ``-(logit[tok] - max - log(Σ expf(logit - max)))`` with the sum in
    double; ``logits`` (n, n_vocab) float32, ``targets`` (n,), ``out`` (n,) float64."""
    n_vocab = logits.shape[1]
    for i in range(logits.shape[0]):
        row = logits[i]
        m = row[0]
        for j in range(1, n_vocab):
            if row[j] > m:
                m = row[j]
        s = 0.0
        for j in range(n_vocab):
            s += np.float64(np.exp(row[j] - m))
        out[i] = -(np.float64(row[targets[i]] - m) - np.log(s))


def squares_reference(x: np.ndarray) -> np.ndarray:
    """Σx² over rows in float64 (for tests)."""
    return (x.astype(np.float64) ** 2).sum(axis=0)
