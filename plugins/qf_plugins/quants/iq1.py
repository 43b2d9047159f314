"""The 1-bit grid types IQ1_S and IQ1_M (block layouts in ggml-common.h).

Every value is one of three levels (-1, 0, 1 shifted by ±1/8); groups of 8 levels are snapped to a 2048-point grid.
Only ggml's own search (the native strategy) produces these types.  Registering them imports no kernel and builds no
grid.
"""

from __future__ import annotations

from qf import QuantType, hookimpl
from qf_plugins.quants.grid import QK_K, GridCodec, ggml_asserts

IQ1_S = QuantType("IQ1_S", 19, QK_K, 50, f"{__name__}:IQ1_S_CODEC", requires_imatrix=True,
                  quantize_requires_imatrix=True, fallback="IQ4_NL",
                  description="1.56 bpw: ternary 8-vectors on a 2048-point grid, 3-bit scale per 32 (imatrix required)")
IQ1_M = QuantType("IQ1_M", 29, QK_K, 56, f"{__name__}:IQ1_M_CODEC", quantize_requires_imatrix=True,
                  fallback="IQ4_NL", description="1.75 bpw: ternary 8-vectors on a 2048-point grid, 3-bit scale per 16")
QUANT_TYPES = (IQ1_S, IQ1_M)


class IQ1Codec(GridCodec):
    kernel_module = "qf_plugins.quants._iq1_kernels"

    def quantize_native(self, x, imatrix):
        out = self.output(x, imatrix)
        t = self._tables()
        quantize = getattr(self._kernels(), f"quantize_{self.kernel}")
        with ggml_asserts(self.name):
            quantize(x, imatrix, t.map, t.neighbours, t.toff64, t.digits, out)
        return out


IQ1_S_CODEC = IQ1Codec(IQ1_S, "iq1s")
IQ1_M_CODEC = IQ1Codec(IQ1_M, "iq1s")


@hookimpl
def qf_register_quant_types(registrar):
    for qtype in QUANT_TYPES:
        registrar.add_quant_type(qtype)
