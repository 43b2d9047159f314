"""F16/BF16 conversion kernels against independent references on millions of float32 bit patterns."""

from __future__ import annotations

import numpy as np

import qf
from qf.testing import kernel_bytes


def patterns(n: int = 1 << 21) -> np.ndarray:
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32)
    edges = np.array([0, 0x80000000, 1, 0x00800000, 0x33000000, 0x33000001, 0x387FC000, 0x387FE000, 0x387FF000,
                      0x38800000, 0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001, 0x7F7FFFFF], np.uint32)
    bits[: edges.size] = edges
    bits[edges.size: 2 * edges.size] = edges | np.uint32(0x80000000)
    values = bits.view(np.float32)
    values = values[np.isfinite(values)]
    return values[: values.size // 64 * 64].reshape(-1, 64)


def test_f16_matches_numpy():
    x = patterns()
    with np.errstate(over="ignore"):
        expected = x.astype(np.float16).view(np.uint16)
    ours = kernel_bytes("F16", x).view(np.uint16)  # the conversion itself (quantize_rows refuses overflow to inf)
    np.testing.assert_array_equal(ours, expected)


def test_bf16_matches_round_to_nearest_even():
    x = patterns()
    u = x.view(np.uint32).astype(np.uint64)
    expected = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    np.testing.assert_array_equal(kernel_bytes("BF16", x).view(np.uint16), expected)
    np.testing.assert_array_equal(qf.dequantize_rows("BF16", kernel_bytes("BF16", x), 64),
                                  (expected.astype(np.uint32) << 16).view(np.float32))
