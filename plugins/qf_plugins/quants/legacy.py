"""The 32-element legacy types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (block layouts in ggml-common.h)."""

from __future__ import annotations

import numpy as np

from qf import hookimpl
from qf.codec import Codec, blocks, check_finite, ensure_finite, importance
from qf.model import BlockProblem, BlockSolution, QuantType

QK = 32


def _kernels():
    from qf_plugins.quants import _legacy_kernels

    return _legacy_kernels


class LegacyCodec(Codec):
    def __init__(self, name: str, nbits: int, has_min: bool, type_size: int) -> None:
        self.name = name
        self.nbits = nbits
        self.has_min = has_min
        self.type_size = type_size
        if has_min:
            self.qmin, self.qmax = 0, (1 << nbits) - 1
        elif nbits == 8:
            self.qmin, self.qmax = -127, 127
        else:
            self.qmin, self.qmax = -(1 << (nbits - 1)), (1 << (nbits - 1)) - 1

    def _out(self, x: np.ndarray) -> np.ndarray:
        return np.empty((x.shape[0], x.shape[1] // QK * self.type_size), np.uint8)

    checks_finite = True  # the plain kernels report the largest |bits| they read; the imatrix paths scan first

    def quantize_native(self, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        k = _kernels()
        out = self._out(x)
        lower = self.name.lower()
        if imatrix is None or self.nbits == 8:
            ensure_finite(x, getattr(k, f"quantize_{lower}")(x, out))
        else:
            check_finite(x)
            getattr(k, f"quantize_{lower}_imatrix")(x, imatrix, out)
        return out

    def pose(self, x: np.ndarray, imatrix: np.ndarray | None) -> BlockProblem:
        kind = "asymmetric" if self.has_min else "symmetric"
        w = importance(x, imatrix)
        return BlockProblem(kind, blocks(x, QK), blocks(w, QK), self.qmin, self.qmax)

    def pack(self, x, imatrix, problem: BlockProblem, solution: BlockSolution) -> np.ndarray:
        k = _kernels()
        out = self._out(x)
        n, nb = x.shape[0], x.shape[1] // QK
        d = np.ascontiguousarray(solution.d, np.float32).reshape(n, nb)
        w = np.ascontiguousarray(problem.w, np.float32).reshape(x.shape)
        if self.has_min:
            m = np.ascontiguousarray(solution.m, np.float32).reshape(n, nb)
            k.pack_asymmetric(x, w, d, m, self.nbits, out)
        else:
            k.pack_symmetric(x, w, d, self.qmin, self.nbits, out)
        return out

    def dequantize(self, data: np.ndarray, n_per_row: int) -> np.ndarray:
        out = np.empty((data.shape[0], n_per_row), np.float32)
        _kernels().dequantize_legacy(data, n_per_row, self.nbits, self.has_min, out)
        return out


Q4_0_CODEC = LegacyCodec("Q4_0", 4, False, 18)
Q4_1_CODEC = LegacyCodec("Q4_1", 4, True, 20)
Q5_0_CODEC = LegacyCodec("Q5_0", 5, False, 22)
Q5_1_CODEC = LegacyCodec("Q5_1", 5, True, 24)
Q8_0_CODEC = LegacyCodec("Q8_0", 8, False, 34)

QUANT_TYPES = (
    QuantType("Q4_0", 2, QK, 18, f"{__name__}:Q4_0_CODEC", ("symmetric",),
              description="4-bit, scale per 32 (x ≈ d·q, q in [-8, 7])"),
    QuantType("Q4_1", 3, QK, 20, f"{__name__}:Q4_1_CODEC", ("asymmetric",),
              description="4-bit, scale and min per 32"),
    QuantType("Q5_0", 6, QK, 22, f"{__name__}:Q5_0_CODEC", ("symmetric",),
              description="5-bit, scale per 32"),
    QuantType("Q5_1", 7, QK, 24, f"{__name__}:Q5_1_CODEC", ("asymmetric",),
              description="5-bit, scale and min per 32"),
    QuantType("Q8_0", 8, QK, 34, f"{__name__}:Q8_0_CODEC", ("symmetric",), uses_imatrix=False,
              description="8-bit, scale per 32 (imatrix not used)"),
)


@hookimpl
def qf_register_quant_types(registrar):
    for qtype in QUANT_TYPES:
        registrar.add_quant_type(qtype)
