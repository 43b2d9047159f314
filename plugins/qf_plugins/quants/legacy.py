"""The 32-element legacy types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (block layouts in ggml-common.h)."""

from __future__ import annotations

import numpy as np

from qf import BlockProblem, BlockSolution, QuantType, hookimpl
from qf.codec import Codec, blocks, check_finite, ensure_finite, importance

QK = 32

Q4_0 = QuantType("Q4_0", 2, QK, 18, f"{__name__}:Q4_0_CODEC", ("symmetric",), fallback="F16",
                 description="4-bit, scale per 32 (x ≈ d·q, q in [-8, 7])")
Q4_1 = QuantType("Q4_1", 3, QK, 20, f"{__name__}:Q4_1_CODEC", ("asymmetric",), fallback="F16",
                 description="4-bit, scale and min per 32")
Q5_0 = QuantType("Q5_0", 6, QK, 22, f"{__name__}:Q5_0_CODEC", ("symmetric",), fallback="F16",
                 description="5-bit, scale per 32")
Q5_1 = QuantType("Q5_1", 7, QK, 24, f"{__name__}:Q5_1_CODEC", ("asymmetric",), fallback="F16",
                 description="5-bit, scale and min per 32")
Q8_0 = QuantType("Q8_0", 8, QK, 34, f"{__name__}:Q8_0_CODEC", ("symmetric",), uses_imatrix=False, fallback="F16",
                 description="8-bit, scale per 32 (imatrix not used)")
QUANT_TYPES = (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)


def _kernels():
    from qf_plugins.quants import _legacy_kernels

    return _legacy_kernels


class LegacyCodec(Codec):
    """``nbits`` per quant; a type posing ``asymmetric`` stores a min beside the scale."""

    def __init__(self, qtype: QuantType, nbits: int) -> None:
        super().__init__(qtype)
        self.nbits = nbits
        self.has_min = "asymmetric" in qtype.problems
        if self.has_min:
            self.qmin, self.qmax = 0, (1 << nbits) - 1
        elif nbits == 8:
            self.qmin, self.qmax = -127, 127
        else:
            self.qmin, self.qmax = -(1 << (nbits - 1)), (1 << (nbits - 1)) - 1

    def quantize_native(self, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        return self.quantize_scanned(x, imatrix)[0]

    def quantize_scanned(self, x: np.ndarray, imatrix: np.ndarray | None) -> tuple[np.ndarray, float]:
        """The plain kernels report the largest |bits| they read; the imatrix paths scan first."""
        k = _kernels()
        out = self.output(x)
        lower = self.name.lower()
        if imatrix is None or self.nbits == 8:
            amax = ensure_finite(x, getattr(k, f"quantize_{lower}")(x, out))
        else:
            amax = check_finite(x)
            getattr(k, f"quantize_{lower}_imatrix")(x, imatrix, out)
        return out, amax

    def alternatives(self, x: np.ndarray, imatrix: np.ndarray | None) -> list[np.ndarray]:
        """ik_llama.cpp's own search for this type where it differs from llama.cpp's (see ik_alternatives)."""
        from qf_plugins.quants.ik_alternatives import ik_alternatives

        return ik_alternatives(self, x, imatrix)

    def pose(self, x: np.ndarray, imatrix: np.ndarray | None) -> BlockProblem:
        kind = "asymmetric" if self.has_min else "symmetric"
        w = importance(x, imatrix)
        return BlockProblem(kind, blocks(x, QK), blocks(w, QK), self.qmin, self.qmax)

    def pack(self, x, imatrix, problem: BlockProblem, solution: BlockSolution) -> np.ndarray:
        k = _kernels()
        out = self.output(x)
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


Q4_0_CODEC = LegacyCodec(Q4_0, 4)
Q4_1_CODEC = LegacyCodec(Q4_1, 4)
Q5_0_CODEC = LegacyCodec(Q5_0, 5)
Q5_1_CODEC = LegacyCodec(Q5_1, 5)
Q8_0_CODEC = LegacyCodec(Q8_0, 8)


@hookimpl
def qf_register_quant_types(registrar):
    for qtype in QUANT_TYPES:
        registrar.add_quant_type(qtype)
