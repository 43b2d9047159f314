"""The K-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K: super-blocks of 256 with quantized sub-block scales (ggml-common.h).

Generic strategies see the sub-blocks (16 or 32 values) as independent symmetric or asymmetric problems; ``pack``
then quantizes their scales (and mins) against fp16 super-block scales the way ggml's reference quantizers do, improves
those stored scales against the weighted error (qf_plugins.quants._refine_kernels) and re-derives the quants from the
stored scales by rounding to nearest.
"""

from __future__ import annotations

import numpy as np

from qf import BlockProblem, BlockSolution, QuantType, hookimpl
from qf.codec import Codec, blocks, importance

QK_K = 256

Q2_K = QuantType("Q2_K", 10, QK_K, 84, f"{__name__}:Q2_K_CODEC", ("asymmetric",), ggml_name="q2_K",
                 fallback="Q4_0", description="2-bit K-quant: 16 × 16 with 4-bit scales and mins (x ≈ d·s·q − dmin·m)")
Q3_K = QuantType("Q3_K", 11, QK_K, 110, f"{__name__}:Q3_K_CODEC", ("symmetric",), ggml_name="q3_K",
                 fallback="Q4_0", description="3-bit K-quant: 16 × 16 with 6-bit scales (q in [-4, 3])")
Q4_K = QuantType("Q4_K", 12, QK_K, 144, f"{__name__}:Q4_K_CODEC", ("asymmetric",), ggml_name="q4_K",
                 fallback="Q5_0", description="4-bit K-quant: 8 × 32 with 6-bit scales and mins")
Q5_K = QuantType("Q5_K", 13, QK_K, 176, f"{__name__}:Q5_K_CODEC", ("asymmetric",), ggml_name="q5_K",
                 fallback="Q5_1", description="5-bit K-quant: 8 × 32 with 6-bit scales and mins")
Q6_K = QuantType("Q6_K", 14, QK_K, 210, f"{__name__}:Q6_K_CODEC", ("symmetric",), ggml_name="q6_K",
                 fallback="Q8_0", description="6-bit K-quant: 16 × 16 with 8-bit scales (q in [-32, 31])")
QUANT_TYPES = (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)


def _kernels():
    from qf_plugins.quants import _kquant_kernels

    return _kquant_kernels


class KQuantCodec(Codec):
    """One K-quant type.  ``sub`` is the sub-block (scale group) size, posed to generic strategies as the type's
    problem kind with quants in ``[qmin, qmax]``."""

    def __init__(self, qtype: QuantType, sub: int, qmin: int, qmax: int) -> None:
        super().__init__(qtype)
        self.lower = qtype.name.lower()
        self.sub = sub
        self.kind = qtype.problems[0]
        self.qmin = qmin
        self.qmax = qmax

    def quantize_native(self, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        k = _kernels()
        out = self.output(x)
        if imatrix is None:
            getattr(k, f"quantize_{self.lower}")(x, out)
        else:
            getattr(k, f"quantize_{self.lower}_imatrix")(x, imatrix, out)
        return out

    def dequantize(self, data: np.ndarray, n_per_row: int) -> np.ndarray:
        k = _kernels()
        out = np.empty((data.shape[0], n_per_row), np.float32)
        if self.name in ("Q4_K", "Q5_K"):
            k.dequantize_q45_k(data, n_per_row, 4 if self.name == "Q4_K" else 5, out)
        else:
            getattr(k, f"dequantize_{self.lower}")(data, n_per_row, out)
        return out

    def alternatives(self, x: np.ndarray, imatrix: np.ndarray | None) -> list[np.ndarray]:
        """ik_llama.cpp's own search for this type where it differs from llama.cpp's (see ik_alternatives)."""
        from qf_plugins.quants.ik_alternatives import ik_alternatives

        return ik_alternatives(self, x, imatrix)

    def pose(self, x: np.ndarray, imatrix: np.ndarray | None) -> BlockProblem:
        w = importance(x, imatrix)
        return BlockProblem(self.kind, blocks(x, self.sub), blocks(w, self.sub), self.qmin, self.qmax,
                            offset_max=0.0)

    def pack(self, x, imatrix, problem: BlockProblem, solution: BlockSolution) -> np.ndarray:
        k = _kernels()
        out = self.output(x)
        n_sub = x.shape[1] // self.sub
        d = np.ascontiguousarray(solution.d, np.float32).reshape(x.shape[0], n_sub)
        q = np.ascontiguousarray(solution.q, np.int32).reshape(x.shape[0], x.shape[1])
        w = np.ascontiguousarray(problem.w, np.float32).reshape(x.shape)
        if self.kind == "asymmetric":
            m = np.ascontiguousarray(solution.m, np.float32).reshape(x.shape[0], n_sub)
            getattr(k, f"pack_{self.lower}")(x, w, d, m, q, out)
        else:
            getattr(k, f"pack_{self.lower}")(x, w, d, q, out)
        return out


Q2_K_CODEC = KQuantCodec(Q2_K, 16, 0, 3)
Q3_K_CODEC = KQuantCodec(Q3_K, 16, -4, 3)
Q4_K_CODEC = KQuantCodec(Q4_K, 32, 0, 15)
Q5_K_CODEC = KQuantCodec(Q5_K, 32, 0, 31)
Q6_K_CODEC = KQuantCodec(Q6_K, 16, -32, 31)


@hookimpl
def qf_register_quant_types(registrar):
    for qtype in QUANT_TYPES:
        registrar.add_quant_type(qtype)
