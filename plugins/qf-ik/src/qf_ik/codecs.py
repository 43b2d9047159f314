"""Codecs of ik_llama.cpp's own quant types (kernels imported lazily, on first use)."""

from __future__ import annotations

import importlib

import numpy as np
from qf.codec import Codec

from qf_ik.types import BY_NAME as T

QK_K = 256
_EMPTY = np.empty(0, np.float32)


def _mod(name: str):
    return importlib.import_module(f"qf_ik.{name}")


def _imatrix(imatrix: np.ndarray | None) -> np.ndarray:
    return _EMPTY if imatrix is None else np.ascontiguousarray(imatrix, np.float32)


class KernelCodec(Codec):
    """A type whose kernels are ``quantize(x, imatrix, out)`` / ``dequantize(data, n_per_row, out)`` functions of
    one kernel module (``kind`` is passed first where one kernel serves several types).  Sizes (and the row header,
    ``row_meta_size``) come from the QuantType."""

    def __init__(self, qtype, module: str, quantize: str, dequantize: str, kind: int | None = None,
                 dequantize_kind: bool = False) -> None:
        super().__init__(qtype)
        self.module = module
        self.quantize_fn = quantize
        self.dequantize_fn = dequantize
        self.kind = kind
        self.dequantize_kind = dequantize_kind

    def row_bytes(self, n_per_row: int) -> int:
        return self.qtype.row_bytes(n_per_row)

    def quantize_native(self, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        out = np.zeros((x.shape[0], self.row_bytes(x.shape[1])), np.uint8)
        fn = getattr(_mod(self.module), self.quantize_fn)
        if self.kind is None:
            fn(x, _imatrix(imatrix), out)
        else:
            fn(self.kind, x, _imatrix(imatrix), out)
        return out

    def dequantize(self, data: np.ndarray, n_per_row: int) -> np.ndarray:
        data = np.ascontiguousarray(data, np.uint8)
        out = np.empty((data.shape[0], n_per_row), np.float32)
        fn = getattr(_mod(self.module), self.dequantize_fn)
        if self.dequantize_kind:
            fn(self.kind, data, n_per_row, out)
        else:
            fn(data, n_per_row, out)
        return out


class RepackCodec(Codec):
    """A row-interleaved ``_R4`` type: groups of 4 consecutive rows quantized by the base codec (``base_quantize``
    overrides its kernel where ik's ``quantize_*_r4`` prepares the imatrix differently), then interleaved.  The
    number of rows must be a multiple of 4 (``QuantType.interleave``; ik asserts it; its llama-quantize, and qf's
    planner, fall back to the base type)."""

    def __init__(self, qtype, base: KernelCodec, base_quantize: str | None = None) -> None:
        super().__init__(qtype)
        self.base_name = base.name
        self.base = base if base_quantize is None else KernelCodec(
            base.qtype, base.module, base_quantize, base.dequantize_fn, base.kind, base.dequantize_kind)

    def quantize_native(self, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        from qf.errors import InvalidWeightsError

        if x.shape[0] % self.nrows:
            raise InvalidWeightsError(
                f"{self.name}: the number of rows ({x.shape[0]}) is not a multiple of {self.nrows}")
        return _mod("_repack_kernels").repack(self.base_name, self.base.quantize_native(x, imatrix), x.shape[1])

    def dequantize(self, data: np.ndarray, n_per_row: int) -> np.ndarray:
        data = np.ascontiguousarray(data, np.uint8)
        return self.base.dequantize(_mod("_repack_kernels").unpack(self.base_name, data, n_per_row), n_per_row)


def _k(name: str, quantize: str, dequantize: str, kind: int | None = None, module: str = "_k_kernels",
       dequantize_kind: bool = False) -> KernelCodec:
    return KernelCodec(T[name], module, quantize, dequantize, kind, dequantize_kind)


Q6_0 = _k("Q6_0", "quantize_q6_0", "dequantize_q6_0")
IQ2_K = _k("IQ2_K", "quantize_iq2_k", "dequantize_iq2_k")
IQ3_K = _k("IQ3_K", "quantize_iq3_k", "dequantize_iq3_k")
IQ4_K = _k("IQ4_K", "quantize_iq456_k", "dequantize_iq4_k", 4)
IQ5_K = _k("IQ5_K", "quantize_iq456_k", "dequantize_iq5_k", 5)
IQ6_K = _k("IQ6_K", "quantize_iq456_k", "dequantize_iq6_k", 6)
IQ2_KS = _k("IQ2_KS", "quantize_iq2_ks", "dequantize_iq2_ks", module="_ks_kernels")
IQ3_KS = _k("IQ3_KS", "quantize_iq3_ks", "dequantize_iq3_ks", module="_ks_kernels")
IQ2_KL = _k("IQ2_KL", "quantize_iq2_kl", "dequantize_iq2_kl", module="_ks_kernels")
IQ4_KSS = _k("IQ4_KSS", "quantize_iq4_kss", "dequantize_iq4_kss", module="_ks_kernels")
IQ4_KS = _k("IQ4_KS", "quantize_iq45_ks", "dequantize_iq45_ks", 4, dequantize_kind=True)
IQ5_KS = _k("IQ5_KS", "quantize_iq45_ks", "dequantize_iq45_ks", 5, dequantize_kind=True)

Q6_0_R4 = RepackCodec(T["Q6_0_R4"], Q6_0, "quantize_q6_0_qhelper")
IQ2_K_R4 = RepackCodec(T["IQ2_K_R4"], IQ2_K)
IQ3_K_R4 = RepackCodec(T["IQ3_K_R4"], IQ3_K)
IQ4_K_R4 = RepackCodec(T["IQ4_K_R4"], IQ4_K)
IQ5_K_R4 = RepackCodec(T["IQ5_K_R4"], IQ5_K)


class TrellisCodec(KernelCodec):
    """The KT types: kernels take the quantizer's tables (built once, on first use) before the data."""

    def _tables(self):
        q = _mod("_kt_kernels").quantizer(self.name)
        return q.values, q.mid, q.starts, q.points, q.cvalues

    def quantize_native(self, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        out = np.zeros((x.shape[0], self.row_bytes(x.shape[1])), np.uint8)
        getattr(_mod(self.module), self.quantize_fn)(*self._tables(), x, _imatrix(imatrix), out)
        return out

    def dequantize(self, data: np.ndarray, n_per_row: int) -> np.ndarray:
        data = np.ascontiguousarray(data, np.uint8)
        out = np.empty((data.shape[0], n_per_row), np.float32)
        getattr(_mod(self.module), self.dequantize_fn)(self._tables()[0], data, n_per_row, out)
        return out


IQ2_KT = TrellisCodec(T["IQ2_KT"], "_kt_kernels", "quantize_iq2_kt", "dequantize_iq2_kt")
IQ1_KT = TrellisCodec(T["IQ1_KT"], "_kt_kernels", "quantize_iq1_kt", "dequantize_iq1_kt")
IQ3_KT = TrellisCodec(T["IQ3_KT"], "_kt_kernels", "quantize_iq3_kt", "dequantize_iq3_kt")


class IQ4KTCodec(TrellisCodec):
    """IQ4_KT: two quantizers (index offsets 4096 and 4096 + 32768), chosen per block of 32."""

    def quantize_native(self, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        kt = _mod("_kt_kernels")
        q1, q2 = kt.quantizer("IQ4_KT"), kt.quantizer("IQ4_KT_2")
        x = np.ascontiguousarray(x, np.float32)
        out = np.zeros((x.shape[0], self.row_bytes(x.shape[1])), np.uint8)
        kt.quantize_iq4_kt(q1.starts, q1.points, q1.cvalues, q1.values, q2.starts, q2.points, q2.cvalues, q2.values,
                           x, _imatrix(imatrix), out)
        return out

    def dequantize(self, data: np.ndarray, n_per_row: int) -> np.ndarray:
        kt = _mod("_kt_kernels")
        data = np.ascontiguousarray(data, np.uint8)
        out = np.empty((data.shape[0], n_per_row), np.float32)
        kt.dequantize_iq4_kt(kt.quantizer("IQ4_KT").values, kt.quantizer("IQ4_KT_2").values, data, n_per_row, out)
        return out


IQ4_KT = IQ4KTCodec(T["IQ4_KT"], "_kt_kernels", "quantize_iq4_kt", "dequantize_iq4_kt")
IQ4_KS_R4 = RepackCodec(T["IQ4_KS_R4"], IQ4_KS)
IQ5_KS_R4 = RepackCodec(T["IQ5_KS_R4"], IQ5_KS)


class MainlineCodec(KernelCodec):
    """ik's own quantizer for a mainline type (the ``ik`` target's codec override): decoding is the type's, so
    :meth:`dequantize` uses the mainline codec."""

    def dequantize(self, data: np.ndarray, n_per_row: int) -> np.ndarray:
        from qf import get_registry

        return get_registry().quant_type(self.name, target="ggml").load_codec().dequantize(data, n_per_row)


def _mainline(name: str, type_id: int, block: int, size: int, quantize: str) -> MainlineCodec:
    from qf import QuantType

    qtype = QuantType(name, type_id, block, size, f"{__name__}:{name}_IK", ggml_name=name.lower().replace("_k", "_K"))
    return MainlineCodec(qtype, "_mainline_kernels", quantize, "")


Q6_K_IK = _mainline("Q6_K", 14, 256, 210, "quantize_q6_k")
