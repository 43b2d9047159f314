"""The lattices the IQ1/IQ2/IQ3 quantizers search, expanded exactly as ggml's ``ggml_quantize_init`` does.

``data/iq_grids.npz`` holds each grid compressed as ggml stores it: one uint16 code per grid point, coordinate ``i``
in bits ``[b*i, b*i + b)`` (``b`` = 2 for the 8-dimensional IQ1/IQ2 grids, 3 for the 4-dimensional IQ3 grids). The
codes were taken once from the ``kgrid_*`` tables of ggml-quants.c (llama.cpp 0c1e570); tests/test_grid.py checks
them against gguf-py's dequantization grids, an independent copy.

From the codes ggml builds, and :func:`tables` reproduces:

* the grid points, coordinate value ``2*l + 1`` for code digit ``l``;
* a map from every digit vector ``u`` (``kmap_size`` entries) to its grid index, or, for a vector not on the grid,
  ``-(offset + 1)`` where ``neighbours[offset]`` is a count ``n`` followed by ``n`` grid indices: every grid point
  whose squared distance to the vector is among the ``nwant`` smallest distinct distances, ordered by
  (distance², index).

:class:`GridTables` adds the layouts the kernels read (float coordinates, per-coordinate error-term offsets).
Tables are built on first use (a numba kernel; well under a second) and cached for the process.  This module is
imported only by the kernels' callers, never when types are registered.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import attrs
import numpy as np

from qf.kernels import jit


@attrs.frozen
class GridSpec:
    key: str  # array name in iq_grids.npz
    dim: int  # coordinates per grid point
    bits: int  # bits per coordinate in a code
    kmap_size: int  # digit vectors the map covers
    nwant: int  # distinct neighbour distances kept
    #: the value a digit stands for in the type's dequantization grid (ggml-common.h's iq*_grid tables)
    values: tuple[int, ...]


_IQ2_VALUES = (8, 25, 43)
SPECS = {
    "iq2xxs": GridSpec("iq2xxs", 8, 2, 43692, 2, _IQ2_VALUES),
    "iq2xs": GridSpec("iq2xs", 8, 2, 43692, 2, _IQ2_VALUES),
    "iq2s": GridSpec("iq2s", 8, 2, 43692, 1, _IQ2_VALUES),
    "iq1s": GridSpec("iq1s", 8, 2, 43692, 3, (-1, 0, 1)),
    "iq3xxs": GridSpec("iq3xxs", 4, 3, 4096, 2, (4, 12, 20, 28, 36, 44, 52, 62)),
    "iq3s": GridSpec("iq3s", 4, 3, 4096, 3, (1, 3, 5, 7, 9, 11, 13, 15)),
}


@attrs.frozen(eq=False)
class GridTables:
    """One expanded grid: ``points`` int8 ``(G, dim)`` with values ``2l+1``, ``qpoints`` the same as float32,
    ``digits`` int8 ``(G, dim)`` with values ``l``, ``map`` int32 ``(kmap_size,)``, ``neighbours`` uint16, and
    ``values`` float32: what each digit dequantizes to (``values[digits]`` is the type's dequantization grid)."""

    spec: GridSpec
    codes: np.ndarray
    points: np.ndarray
    qpoints: np.ndarray
    digits: np.ndarray
    map: np.ndarray
    neighbours: np.ndarray
    values: np.ndarray
    #: uint8 ``(G, dim)``: ``i*len(values) + digit`` — where coordinate i of a point finds its error term in a
    #: table of ``dim × len(values)`` per-coordinate, per-level terms (see the kernels' neighbour searches)
    toff: np.ndarray
    #: ``toff`` with each point's offsets packed into one uint64 (offset i in bits 8i..8i+7)
    toff64: np.ndarray

    @property
    def dequant_grid(self) -> np.ndarray:
        """float32 ``(G, dim)``: the grid as the type's dequantizer reads it."""
        return self.values[self.digits]


@cache
def codes() -> dict[str, np.ndarray]:
    """The compressed grids, as stored in data/iq_grids.npz (uint16 arrays keyed by grid name)."""
    with resources.files("qf_plugins.quants").joinpath("data/iq_grids.npz").open("rb") as f:
        data = np.load(f)
        return {key: data[key].astype(np.uint16) for key in data.files}


def digits_of(code_table: np.ndarray, dim: int, bits: int) -> np.ndarray:
    """Unpack codes into their digit vectors, int8 ``(G, dim)``."""
    shifts = bits * np.arange(dim, dtype=np.int64)
    return ((code_table.astype(np.int64)[:, None] >> shifts) & ((1 << bits) - 1)).astype(np.int8)


@cache
def tables(name: str) -> GridTables:
    """The expanded grid ``name`` (one of :data:`SPECS`), built on first call."""
    spec = SPECS[name]
    code_table = codes()[spec.key]
    digits = digits_of(code_table, spec.dim, spec.bits)
    points = (2 * digits + 1).astype(np.int8)
    kmap, neighbours = build_neighbours(digits, spec.bits, spec.kmap_size, spec.nwant)
    values = np.array(spec.values, np.float32)
    toff = (np.arange(spec.dim) * len(spec.values) + digits).astype(np.uint8)
    byte_shifts = np.uint64(8) * np.arange(spec.dim, dtype=np.uint64)
    toff64 = (toff.astype(np.uint64) << byte_shifts).sum(axis=1, dtype=np.uint64)
    return GridTables(spec, code_table, points, points.astype(np.float32), digits, kmap, neighbours, values, toff,
                      toff64)


@jit
def _distances(cols, bits, u, d2):
    """Squared distances, in digit units, from digit vector ``u`` to every grid point (``cols`` = digits transposed).

    ggml measures between points (coordinates 2l+1): 4 times these, the same order."""
    dim, n = cols.shape
    mask = (1 << bits) - 1
    d2[:] = 0
    for k in range(dim):
        p = np.int32((u >> (bits * k)) & mask)
        for j in range(n):
            diff = cols[k, j] - p
            d2[j] += diff * diff


@jit
def _cut(d2, nwant, hist):
    """Count the distances into ``hist``; return the ``nwant``-th smallest distinct value of ``d2``."""
    hist[:] = 0
    for j in range(d2.size):
        hist[d2[j]] += 1
    have = 0
    for v in range(hist.size):
        if hist[v]:
            have += 1
            if have == nwant:
                return v
    return hist.size - 1


@jit
def build_neighbours(digits, bits, kmap_size, nwant):
    """(map, neighbours) as ggml's init builds them; see the module docstring for the encoding."""
    n = digits.shape[0]
    dim = digits.shape[1]
    cols = np.ascontiguousarray(digits.T).astype(np.int32)
    kmap = np.full(kmap_size, -1, np.int32)
    for j in range(n):
        u = 0
        for k in range(dim):
            u |= np.int64(digits[j, k]) << (bits * k)
        kmap[u] = j
    hist = np.zeros(dim * ((1 << bits) - 1) ** 2 + 1, np.int64)
    d2 = np.empty(n, np.int32)
    cuts = np.full(kmap_size, -1, np.int32)
    # pass 1: the cut distance and list size of every vector off the grid
    total = 0
    for u in range(kmap_size):
        if kmap[u] >= 0:
            continue
        _distances(cols, bits, u, d2)
        cut = _cut(d2, nwant, hist)
        cuts[u] = cut
        for v in range(cut + 1):
            total += hist[v]
        total += 1
    neighbours = np.empty(total, np.uint16)
    # pass 2: the lists, ordered by (distance², index)
    pos = 0
    for u in range(kmap_size):
        cut = cuts[u]
        if cut < 0:
            continue
        _distances(cols, bits, u, d2)
        _cut(d2, nwant, hist)
        kmap[u] = -(pos + 1)
        start = pos
        pos += 1
        for v in range(cut + 1):
            if hist[v] == 0:
                continue
            for j in range(n):
                if d2[j] == v:
                    neighbours[pos] = j
                    pos += 1
        neighbours[start] = pos - start - 1
    return kmap, neighbours
