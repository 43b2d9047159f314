"""The ternary types TQ1_0 (1.6875 bpw, 5 trits per byte) and TQ2_0 (2.0625 bpw, 2 bits per trit): x ≈ d·q with
q in {-1, 0, 1} and an fp16 d per 256 values (ggml-common.h: ``block_tq1_0``, ``block_tq2_0``).  ggml ignores the
imatrix for both."""

from __future__ import annotations

import numpy as np

from qf import BlockProblem, BlockSolution, QuantType, hookimpl
from qf.codec import Codec, blocks

QK_K = 256

TQ1_0 = QuantType("TQ1_0", 34, QK_K, 54, f"{__name__}:TQ1_0_CODEC", ("symmetric",), ggml_name="tq1_0",
                  uses_imatrix=False, fallback="Q4_0",
                  description="1.69 bpw ternary (q in {-1, 0, 1}, 5 per byte), fp16 scale per 256; imatrix not used")
TQ2_0 = QuantType("TQ2_0", 35, QK_K, 66, f"{__name__}:TQ2_0_CODEC", ("symmetric",), ggml_name="tq2_0",
                  uses_imatrix=False, fallback="Q4_0",
                  description="2.06 bpw ternary (q in {-1, 0, 1}, 2 bits each), fp16 scale per 256; imatrix not used")
QUANT_TYPES = (TQ1_0, TQ2_0)


def _kernels():
    from qf_plugins.quants import _ternary_kernels

    return _ternary_kernels


class TernaryCodec(Codec):

    def quantize_native(self, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        out = self.output(x)
        getattr(_kernels(), f"quantize_{self.name.lower()}")(x, out)
        return out

    def pose(self, x: np.ndarray, imatrix: np.ndarray | None) -> BlockProblem:
        """Super-blocks of 256, x ≈ d·q with q in [-1, 1]; unit weights (ggml weighs nothing, imatrix unused)."""
        return BlockProblem("symmetric", blocks(x, QK_K), np.ones((x.size // QK_K, QK_K), np.float32), -1, 1)

    def pack(self, x, imatrix, problem: BlockProblem, solution: BlockSolution) -> np.ndarray:
        """Stores |d| (negating the trits when d < 0), so the block reads as ggml writes it."""
        out = self.output(x)
        n, nb = x.shape[0], x.shape[1] // QK_K
        d = np.ascontiguousarray(solution.d, np.float32).reshape(n, nb)
        q = np.ascontiguousarray(solution.q, np.int64).reshape(n, nb, QK_K)
        if q.size and (q.min() < -1 or q.max() > 1):
            raise ValueError(f"{self.name}: quants must be in [-1, 1], got [{q.min()}, {q.max()}]")
        getattr(_kernels(), f"pack_{self.name.lower()}")(d, q, out)
        return out

    def dequantize(self, data: np.ndarray, n_per_row: int) -> np.ndarray:
        out = np.empty((data.shape[0], n_per_row), np.float32)
        getattr(_kernels(), f"dequantize_{self.name.lower()}")(data, n_per_row, out)
        return out


TQ1_0_CODEC = TernaryCodec(TQ1_0)
TQ2_0_CODEC = TernaryCodec(TQ2_0)


@hookimpl
def qf_register_quant_types(registrar):
    for qtype in QUANT_TYPES:
        registrar.add_quant_type(qtype)
