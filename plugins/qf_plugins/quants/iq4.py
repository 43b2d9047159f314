"""The non-linear 4-bit types IQ4_NL and IQ4_XS: x ≈ d·T[q] with T = kvalues_iq4nl (16 int8 levels).

IQ4_NL has an fp16 scale per 32 values; IQ4_XS groups 8 such blocks in a 256 super-block with an fp16 super scale
and 6-bit block scales (ggml-common.h: ``block_iq4_nl``, ``block_iq4_xs``).
"""

from __future__ import annotations

import numpy as np

from qf import BlockProblem, BlockSolution, QuantType, hookimpl
from qf.codec import Codec, blocks, importance

QK = 32
QK_K = 256
KVALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)

IQ4_NL = QuantType("IQ4_NL", 20, QK, 18, f"{__name__}:IQ4_NL_CODEC", ("table",), ggml_name="iq4_nl", fallback="F16",
                   description="4.5 bpw non-linear: fp16 scale per 32, 16-level table")
IQ4_XS = QuantType("IQ4_XS", 23, QK_K, 136, f"{__name__}:IQ4_XS_CODEC", ("table",), ggml_name="iq4_xs",
                   fallback="IQ4_NL",
                   description="4.25 bpw non-linear: 6-bit scales per 32 under an fp16 scale per 256")
QUANT_TYPES = (IQ4_NL, IQ4_XS)


def _kernels():
    from qf_plugins.quants import _iq4_kernels

    return _iq4_kernels


class IQ4Codec(Codec):
    """Blocks of 32 against the table; IQ4_NL stores a scale per block, IQ4_XS 6-bit block scales under a
    super-block scale per 256 (its block size)."""

    def quantize_native(self, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        k = _kernels()
        out = self.output(x)
        kernel = f"quantize_{self.name.lower()}"
        if imatrix is None:
            getattr(k, kernel)(x, out)
        else:
            getattr(k, kernel + "_imatrix")(x, imatrix, out)
        return out

    def alternatives(self, x: np.ndarray, imatrix: np.ndarray | None) -> list[np.ndarray]:
        """ik_llama.cpp's own search for this type where it differs from llama.cpp's (see ik_alternatives)."""
        from qf_plugins.quants.ik_alternatives import ik_alternatives

        return ik_alternatives(self, x, imatrix)

    def pose(self, x: np.ndarray, imatrix: np.ndarray | None) -> BlockProblem:
        """Blocks of 32 against the table, weighted by the imatrix (ones without)."""
        w = importance(x, imatrix)
        table = np.array(KVALUES, np.float32)
        return BlockProblem("table", blocks(x, QK), blocks(w, QK), 0, len(KVALUES) - 1, table)

    def pack(self, x, imatrix, problem: BlockProblem, solution: BlockSolution) -> np.ndarray:
        k = _kernels()
        out = self.output(x)
        n, nb = x.shape[0], x.shape[1] // QK
        d = np.ascontiguousarray(solution.d, np.float32).reshape(n, nb)
        w = np.ascontiguousarray(problem.w, np.float32).reshape(x.shape)
        if self.block_size == QK:
            k.pack_nl(x, w, d, out)
        else:
            k.pack_xs(x, w, d, out)
        return out

    def dequantize(self, data: np.ndarray, n_per_row: int) -> np.ndarray:
        out = np.empty((data.shape[0], n_per_row), np.float32)
        getattr(_kernels(), f"dequantize_{self.name.lower()}")(data, n_per_row, out)
        return out


IQ4_NL_CODEC = IQ4Codec(IQ4_NL)
IQ4_XS_CODEC = IQ4Codec(IQ4_XS)


@hookimpl
def qf_register_quant_types(registrar):
    for qtype in QUANT_TYPES:
        registrar.add_quant_type(qtype)
