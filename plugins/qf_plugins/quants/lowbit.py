"""The 2026 low-bit types Q1_0 (signs times an fp16 mean magnitude per 128) and Q2_0 (2-bit codes for -1, 0, 1, 2 times
an fp16 scale per 64) — ggml-common.h: ``block_q1_0``, ``block_q2_0``.  ggml ignores the imatrix for both.

gguf-py 0.19 does not know type id 42 (Q2_0): its block size and bytes come from this registration."""

from __future__ import annotations

import numpy as np

from qf import BlockProblem, BlockSolution, QuantType, hookimpl
from qf.codec import Codec, blocks

# llama.cpp has no fallback for Q1_0 (it throws); qf falls back to the next smaller block, Q2_0 (then Q4_0)
Q1_0 = QuantType("Q1_0", 41, 128, 18, f"{__name__}:Q1_0_CODEC", ("table",), ggml_name="q1_0", uses_imatrix=False,
                 fallback="Q2_0", description="1.125 bpw: signs times the mean |x| (fp16) per 128; imatrix not used")
Q2_0 = QuantType("Q2_0", 42, 64, 18, f"{__name__}:Q2_0_CODEC", ("symmetric",), ggml_name="q2_0", uses_imatrix=False,
                 fallback="Q4_0",
                 description="2.25 bpw: codes -1, 0, 1, 2 times an fp16 scale per 64; imatrix not used")
QUANT_TYPES = (Q1_0, Q2_0)


def _kernels():
    from qf_plugins.quants import _lowbit_kernels

    return _lowbit_kernels


class LowBitCodec(Codec):

    def quantize_native(self, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        out = self.output(x)
        getattr(_kernels(), f"quantize_{self.name.lower()}")(x, out)
        return out

    def _ones(self, x: np.ndarray) -> np.ndarray:
        return np.ones((x.size // self.block_size, self.block_size), np.float32)

    def pose(self, x: np.ndarray, imatrix: np.ndarray | None) -> BlockProblem:
        """Q1_0: blocks of 128 against the table (-1, +1); Q2_0: blocks of 64, x ≈ d·q with q in [-1, 2]; unit
        weights (ggml weighs nothing, imatrix unused)."""
        xb = blocks(x, self.block_size)
        if self.name == "Q1_0":
            return BlockProblem("table", xb, self._ones(x), 0, 1, np.array([-1.0, 1.0], np.float32))
        return BlockProblem("symmetric", xb, self._ones(x), -1, 2)

    def pack(self, x, imatrix, problem: BlockProblem, solution: BlockSolution) -> np.ndarray:
        """Q2_0 writes the solution as it is.  Q1_0 takes the signs from the solution and stores the weighted
        least-squares scale for them (a 1-bit block's scale is fixed by its signs; what a solver maximising
        (Σwxq)²/Σwq² returns anyway, and what keeps round-to-nearest's max-|x| scale from wrecking the block)."""
        out = self.output(x)
        n, nb = x.shape[0], x.shape[1] // self.block_size
        d = np.ascontiguousarray(solution.d, np.float32).reshape(n, nb)
        q = np.ascontiguousarray(solution.q, np.int64).reshape(n, nb, self.block_size)
        lo, hi = (0, 1) if self.name == "Q1_0" else (-1, 2)
        if q.size and (q.min() < lo or q.max() > hi):
            raise ValueError(f"{self.name}: quants must be in [{lo}, {hi}], got [{q.min()}, {q.max()}]")
        if self.name == "Q1_0":
            w = np.ascontiguousarray(problem.w, np.float32).reshape(x.shape)
            _kernels().pack_q1_0(x, w, d, q, out)
        else:
            _kernels().pack_q2_0(d, q, out)
        return out

    def dequantize(self, data: np.ndarray, n_per_row: int) -> np.ndarray:
        out = np.empty((data.shape[0], n_per_row), np.float32)
        getattr(_kernels(), f"dequantize_{self.name.lower()}")(data, n_per_row, out)
        return out


Q1_0_CODEC = LowBitCodec(Q1_0)
Q2_0_CODEC = LowBitCodec(Q2_0)


@hookimpl
def qf_register_quant_types(registrar):
    for qtype in QUANT_TYPES:
        registrar.add_quant_type(qtype)
