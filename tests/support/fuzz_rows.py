"""Inputs built to hit the edges of a quantizer, for comparisons with a reference (llama.cpp's C, or the numpy
reference of the legacy types): exact rounding ties, signed zeros, subnormals, huge and tiny magnitudes, constant
rows, single outliers, values on a half-step lattice; and importance matrices with zero and extreme columns.

Seeds are fresh every session (printed in pytest's header and in every failure message); ``QF_FUZZ_SEED=N``
reproduces a run.  Each type derives its own stream from the session seed and its name, so one type's failure
reproduces alone (``QF_FUZZ_SEED=N pytest -k Q4_0``).
"""

from __future__ import annotations

import os
import secrets
import zlib

import numpy as np

F32 = np.float32
_SESSION_SEED = secrets.randbits(31)


def session_seed() -> int:
    raw = os.environ.get("QF_FUZZ_SEED", "").strip()
    return int(raw) if raw else _SESSION_SEED


def reproduce_hint() -> str:
    return f"reproduce with QF_FUZZ_SEED={session_seed()}"


def rng_for(*names: object) -> np.random.Generator:
    """The generator for one (type, length, ...) combination of this session."""
    key = zlib.crc32("/".join(map(str, names)).encode())
    return np.random.default_rng([session_seed(), key])


# ---------------------------------------------------------------------------------------------------------------------
# exact ties of the legacy types' reference quantizers (values at (k + 1/2) steps of a scale they compute exactly)

_TIE_LEVELS = {  # type: (kind, anchor in steps, tie k range): see tie_rows
    "Q8_0": ("symmetric", 127, (-127, 126)),
    "Q4_0": ("signed_max", 8, (-8, 7)),
    "Q5_0": ("signed_max", 16, (-16, 15)),
    "Q4_1": ("min_max", 15, (0, 14)),
    "Q5_1": ("min_max", 31, (0, 30)),
}
TIE_TYPES = tuple(_TIE_LEVELS)


def tie_rows(type_name: str, rng: np.random.Generator, rows: int, n_per_row: int) -> np.ndarray:
    """Rows (32-value blocks) where every block's scale comes out of the reference quantizer exactly as a power of
    two s, and most values sit at (k + 1/2)·s, so ``x·(1/d)`` lands exactly on a half-integer: the rounding step
    (``roundf`` for Q8_0, ``(int8_t)(x0 + 8.5f)`` / ``(x0 + 0.5f)`` truncation for the others) decides alone.

    * Q8_0: one value ±127·s gives amax, so d = 127·s/127 = s (and 1/d = 1/s) exactly.
    * Q4_0/Q5_0: the first value of largest magnitude ±8·s (±16·s) gives d = max/−8 = ∓s; the opposite sign at the
      same magnitude appears later in some blocks (the first one must win).
    * Q4_1/Q5_1: min = m·s and max = min + 15·s (31·s) give d = s exactly; the rest at min + (k + 1/2)·s.
    The others are integer steps k·s (exact quants), and a few blocks are all ties of one sign.
    """
    kind, anchor, (k_lo, k_hi) = _TIE_LEVELS[type_name]
    blocks = rows * n_per_row // 32
    out = np.empty((blocks, 32), np.float64)
    for b in range(blocks):
        s = 2.0 ** int(rng.integers(-24, 12))
        k = rng.integers(k_lo, k_hi + 1, 32)
        halves = rng.random(32) < 0.75
        v = (k + np.where(halves, 0.5, 0.0)) * s
        if b % 7 == 3:  # all ties, one sign
            v = (np.abs(k) + 0.5) * s * (1 if b % 2 else -1)
            v = np.clip(v, -(anchor - 0.5) * s, (anchor - 0.5) * s) if kind != "min_max" else np.abs(v)
        pos = int(rng.integers(0, 32))
        if kind == "symmetric":
            v[pos] = anchor * s * rng.choice([-1.0, 1.0])
        elif kind == "signed_max":
            sign = rng.choice([-1.0, 1.0])
            v[pos] = anchor * s * sign
            if b % 3 == 0 and pos < 31:  # the same magnitude, opposite sign, later: the first one wins
                v[int(rng.integers(pos + 1, 32))] = -anchor * s * sign
        else:
            base = -float(rng.integers(0, 40)) * s
            v = base + np.clip(v, 0.0, (anchor - 0.5) * s)
            v[pos] = base
            v[(pos + 1 + int(rng.integers(0, 31))) % 32] = base + anchor * s
        out[b] = v
    x = out.astype(F32).reshape(rows, n_per_row)
    assert np.array_equal(x.astype(np.float64).reshape(blocks, 32), out), "tie values must be exact in float32"
    return x


def count_exact_ties(type_name: str, x: np.ndarray) -> int:
    """How many values of ``x`` land exactly on a half-integer after the type's reference scaling (the test's own
    proof that :func:`tie_rows` still builds ties)."""
    kind, anchor, _ = _TIE_LEVELS[type_name]
    b = x.reshape(-1, 32).astype(F32)
    if kind == "symmetric":
        d = (np.abs(b).max(axis=1) / F32(anchor)).astype(F32)
        x0 = b * (F32(1) / d)[:, None]
    elif kind == "signed_max":
        first = b[np.arange(b.shape[0]), np.argmax(np.abs(b), axis=1)]
        d = (first / F32(-anchor)).astype(F32)
        x0 = b * (F32(1) / d)[:, None]
    else:
        lo = b.min(axis=1)
        d = ((b.max(axis=1) - lo) / F32(anchor)).astype(F32)
        x0 = (b - lo[:, None]) * (F32(1) / d)[:, None]
    frac = np.abs(x0 - np.trunc(x0))
    return int((frac == F32(0.5)).sum())


# ---------------------------------------------------------------------------------------------------------------------
# edge rows for any type


def edge_rows(rng: np.random.Generator, n: int, block: int) -> list[tuple[str, np.ndarray]]:
    """(label, rows) groups of ``n`` values per row; every group finite float32."""
    g = rng.standard_normal((3, n))
    alt = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    groups: dict[str, np.ndarray] = {}
    groups["zeros"] = np.stack([np.zeros(n), -np.zeros(n), np.where(rng.random(n) < 0.5, 0.0, -0.0)])
    groups["subnormal"] = np.stack([g[0] * 1e-40, alt * 1.4e-45, np.where(rng.random(n) < 0.5, g[1] * 1e-42, 0.0),
                                    g[2] * 2.0 ** -126])
    groups["tiny"] = np.stack([g[0] * 1e-30, g[1] * 1e-20, g[2] * 3e-38])
    groups["huge"] = np.stack([g[0] * 1e30, g[1] * 1e36, rng.uniform(-3.4e38, 3.4e38, n), g[2] * 1e10])
    groups["fp16_edge"] = np.stack([g[0] * 6e4, alt * 65504.0, alt * 65520.0, g[1] * 2.0 ** -24, g[2] * 2.0 ** -14])
    const = np.stack([np.full(n, 0.5), np.full(n, -3.0), np.full(n, 1e-3), np.full(n, 7e4), np.full(n, -1e-40)])
    groups["constant"] = const
    outlier = (g * 0.01).copy()
    for r in range(3):  # one outlier per row, anywhere; and a row of zeros with a single value
        outlier[r, int(rng.integers(0, n))] = rng.choice([-1.0, 1.0]) * 10.0 ** rng.uniform(0, 4)
    lone = np.zeros((2, n))
    lone[0, int(rng.integers(0, n))] = rng.normal()
    lone[1, int(rng.integers(0, n))] = -1e-38
    groups["outlier"] = np.vstack([outlier, lone])
    e = rng.integers(-12, 4, (4, 1)).astype(float)
    k = rng.integers(-40, 41, (4, n))
    groups["lattice"] = (k + np.where(rng.random((4, n)) < 0.5, 0.5, 0.0)) * 2.0 ** e  # half steps of a power of 2
    groups["few_values"] = np.round(rng.standard_normal((3, n)) * 2) / 4
    same_mag = np.abs(g[:2]) * 0.02
    same_mag[:, ::block] = 1.0
    same_mag[:, 1::block] = -1.0  # +amax then -amax in each block
    groups["signed_amax"] = np.vstack([same_mag, -same_mag])
    groups["one_sign"] = np.stack([np.abs(g[0]) + 0.5, -np.abs(g[1]) - 0.5, np.abs(g[2]) * 1e-3])
    groups["gauss"] = rng.standard_normal((4, n)) * 0.02
    groups["heavy"] = rng.standard_t(2.0, (4, n)) * 0.02
    groups["mixed_scales"] = rng.standard_normal((3, n)) * 10.0 ** rng.integers(-30, 30, (3, n)).astype(float)
    with np.errstate(over="ignore"):
        return [(name, v.astype(F32)) for name, v in groups.items()]


def imatrix_variants(rng: np.random.Generator, n: int, requires: bool) -> list[tuple[str, np.ndarray | None]]:
    """None (unless required), lognormal, zero columns, extreme columns (huge and tiny), all zero."""
    zeros = rng.lognormal(0, 1, n)
    zeros[rng.random(n) < 0.3] = 0.0
    extreme = rng.lognormal(0, 1, n)
    extreme[rng.random(n) < 0.05] = 1e30
    extreme[rng.random(n) < 0.05] = 1e-30
    out: list[tuple[str, np.ndarray | None]] = [] if requires else [("none", None)]
    out += [("lognormal", rng.lognormal(0, 1, n)), ("zero_columns", zeros), ("extreme_columns", extreme),
            ("all_zero", np.zeros(n))]
    return [(label, None if im is None else im.astype(F32)) for label, im in out]


def scale_overflow_rows(block: int) -> tuple[np.ndarray, np.ndarray]:
    """One row of values within fp16 (|x| <= 15500) and an imatrix with one column of 1e30: the weighted sums of the
    imatrix searches overflow float32 and the stored scale becomes inf/NaN (llama.cpp's validation refuses)."""
    x = np.tile((np.arange(32, dtype=F32) - F32(15.5)) * F32(1000), block // 32).reshape(1, block)
    imatrix = np.ones(block, F32)
    imatrix[3] = 1e30
    return x, imatrix


def exponent_wrap_rows() -> np.ndarray:
    """Values around 2^-126: MXFP4's shared exponent floor(log2(amax)) - 2 + 127 goes below 0 and wraps to 255."""
    return (np.random.default_rng(0).standard_normal((1, 64)) * 2.0 ** -126).astype(F32)
