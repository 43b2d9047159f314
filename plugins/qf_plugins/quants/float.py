"""Plain float storage: F32, F16 and BF16 (one element per block)."""

from __future__ import annotations

import numpy as np

from qf import QuantType, hookimpl
from qf.codec import Codec, ensure_finite

F32 = QuantType("F32", 0, 1, 4, f"{__name__}:F32_CODEC", uses_imatrix=False, is_quantized=False,
                description="32-bit float")
F16 = QuantType("F16", 1, 1, 2, f"{__name__}:F16_CODEC", uses_imatrix=False, is_quantized=False,
                description="IEEE 16-bit float")
BF16 = QuantType("BF16", 30, 1, 2, f"{__name__}:BF16_CODEC", uses_imatrix=False, is_quantized=False,
                 description="bfloat16")
QUANT_TYPES = (F32, F16, BF16)


class F32Codec(Codec):
    def quantize_native(self, x, imatrix):
        return np.ascontiguousarray(x, np.float32).view(np.uint8)

    def dequantize(self, data, n_per_row):
        """A view of ``data`` (no copy)."""
        return np.ascontiguousarray(data).view(np.float32).reshape(data.shape[0], n_per_row)


class F16Codec(Codec):
    """IEEE half, round to nearest even, as ggml's GGML_FP32_TO_FP16 (values beyond ±65504 become ±inf)."""

    def quantize_native(self, x, imatrix):
        return self.quantize_scanned(x, imatrix)[0]

    def quantize_scanned(self, x, imatrix):
        from qf_plugins.quants._float_kernels import to_f16

        out = np.empty(x.shape, np.uint16)
        amax = ensure_finite(x, to_f16(x, out))
        return out.view(np.uint8), amax

    def dequantize(self, data, n_per_row):
        return np.ascontiguousarray(data).view(np.float16).reshape(data.shape[0], n_per_row).astype(np.float32)


class BF16Codec(Codec):
    """bfloat16 as ggml_compute_fp32_to_bf16: round to nearest even, NaN kept quiet."""

    def quantize_native(self, x, imatrix):
        return self.quantize_scanned(x, imatrix)[0]

    def quantize_scanned(self, x, imatrix):
        from qf_plugins.quants._float_kernels import to_bf16

        out = np.empty(x.shape, np.uint16)
        amax = ensure_finite(x, to_bf16(x, out))
        return out.view(np.uint8), amax

    def dequantize(self, data, n_per_row):
        h = np.ascontiguousarray(data).view(np.uint16).reshape(data.shape[0], n_per_row)
        return (h.astype(np.uint32) << np.uint32(16)).view(np.float32)


F32_CODEC = F32Codec(F32)
F16_CODEC = F16Codec(F16)
BF16_CODEC = BF16Codec(BF16)


@hookimpl
def qf_register_quant_types(registrar):
    for qtype in QUANT_TYPES:
        registrar.add_quant_type(qtype)
