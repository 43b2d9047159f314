"""The fp4 (e2m1) types: MXFP4 (OCP microscaling: an E8M0 power-of-two scale per 32) and NVFP4 (a UE4M3 scale per 16,
blocks of 64) — x ≈ d·T[q] with T the doubled e2m1 levels ±{0, 1, 2, 3, 4, 6, 8, 12} (ggml-common.h:
``block_mxfp4``, ``block_nvfp4``).  ggml ignores the imatrix for both."""

from __future__ import annotations

import numpy as np

from qf import BlockProblem, BlockSolution, QuantType, hookimpl
from qf.codec import Codec, blocks

MXFP4 = QuantType("MXFP4", 39, 32, 17, f"{__name__}:MXFP4_CODEC", ("table",), ggml_name="mxfp4", uses_imatrix=False,
                  fallback="F16", description="4.25 bpw fp4 (e2m1) with an E8M0 power-of-two scale per 32; imatrix"
                  " not used")
# llama.cpp has no fallback for NVFP4 (it throws); qf uses the 32-block fp4 type, MXFP4
NVFP4 = QuantType("NVFP4", 40, 64, 36, f"{__name__}:NVFP4_CODEC", ("table",), ggml_name="nvfp4", uses_imatrix=False,
                  fallback="MXFP4", description="4.5 bpw fp4 (e2m1) with a UE4M3 scale per 16; imatrix not used")
QUANT_TYPES = (MXFP4, NVFP4)

#: the distinct doubled e2m1 levels, ascending (the posed table; codes are re-derived when packing)
TABLE = (-12.0, -8.0, -6.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0)


def _kernels():
    from qf_plugins.quants import _fp4_kernels

    return _fp4_kernels


class FP4Codec(Codec):
    """``group`` values share a scale."""

    def __init__(self, qtype: QuantType, group: int) -> None:
        super().__init__(qtype)
        self.group = group

    def quantize_native(self, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        out = self.output(x)
        getattr(_kernels(), f"quantize_{self.name.lower()}")(x, out)
        return out

    def pose(self, x: np.ndarray, imatrix: np.ndarray | None) -> BlockProblem:
        """Groups sharing a scale against the doubled e2m1 table; unit weights (ggml weighs nothing)."""
        w = np.ones((x.size // self.group, self.group), np.float32)
        return BlockProblem("table", blocks(x, self.group), w, 0, len(TABLE) - 1, np.array(TABLE, np.float32))

    def pack(self, x, imatrix, problem: BlockProblem, solution: BlockSolution) -> np.ndarray:
        """Rounds each |d| to a neighbouring representable scale (E8M0 power of two / UE4M3), choosing the neighbour
        whose re-derived nearest codes give the smaller weighted error, and re-derives the codes from it."""
        out = self.output(x)
        n = x.shape[0]
        d = np.ascontiguousarray(solution.d, np.float32).reshape(n, x.shape[1] // self.group)
        w = np.ascontiguousarray(problem.w, np.float32).reshape(x.shape)
        getattr(_kernels(), f"pack_{self.name.lower()}")(x, w, d, out)
        return out

    def dequantize(self, data: np.ndarray, n_per_row: int) -> np.ndarray:
        out = np.empty((data.shape[0], n_per_row), np.float32)
        getattr(_kernels(), f"dequantize_{self.name.lower()}")(data, n_per_row, out)
        return out

    def invalid_rows(self, data: np.ndarray) -> tuple[np.ndarray, str] | None:
        """MXFP4: blocks of values below ~2^-125 wrap the E8M0 exponent to 255, which ggml reserves (NaN) and its
        validation refuses ("found invalid e value 255"); NVFP4's UE4M3 scales have no invalid byte."""
        if self.qtype is not MXFP4:
            return None
        e = data.reshape(data.shape[0], -1, self.type_size)[:, :, 0]
        return np.flatnonzero((e == 255).any(axis=1)), "an E8M0 exponent of 255 (values below ~2^-125)"


MXFP4_CODEC = FP4Codec(MXFP4, 32)
NVFP4_CODEC = FP4Codec(NVFP4, 16)


@hookimpl
def qf_register_quant_types(registrar):
    for qtype in QUANT_TYPES:
        registrar.add_quant_type(qtype)
