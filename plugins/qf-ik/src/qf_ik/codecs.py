"""Codecs of ik_llama.cpp's own quant types (kernels imported lazily, on first use)."""

from __future__ import annotations

import importlib

import numpy as np
from qf.codec import Codec

QK_K = 256
_EMPTY = np.empty(0, np.float32)


def _mod(name: str):
    return importlib.import_module(f"qf_ik.{name}")


def _imatrix(imatrix: np.ndarray | None) -> np.ndarray:
    return _EMPTY if imatrix is None else np.ascontiguousarray(imatrix, np.float32)


class KernelCodec(Codec):
    """A type whose kernels are ``quantize(x, imatrix, out)`` / ``dequantize(data, n_per_row, out)`` functions of
    one kernel module (``kind`` is passed first where one kernel serves several types)."""

    def __init__(self, name: str, block_size: int, type_size: int, module: str, quantize: str, dequantize: str,
                 kind: int | None = None, row_meta: int = 0, dequantize_kind: bool = False) -> None:
        self.name = name
        self.block_size = block_size
        self.type_size = type_size
        self.module = module
        self.quantize_fn = quantize
        self.dequantize_fn = dequantize
        self.kind = kind
        self.dequantize_kind = dequantize_kind
        #: bytes at the start of every row (ik's row_meta_size: a float32 row scale for the KS/KT types)
        self.row_meta = row_meta

    def row_bytes(self, n_per_row: int) -> int:
        return self.row_meta + n_per_row // self.block_size * self.type_size

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
    number of rows must be a multiple of 4 (ik asserts it; its llama-quantize falls back to the base type)."""

    nrows = 4

    def __init__(self, name: str, base_name: str, base: KernelCodec, base_quantize: str | None = None) -> None:
        self.name = name
        self.base_name = base_name
        self.base = base if base_quantize is None else KernelCodec(
            base.name, base.block_size, base.type_size, base.module, base_quantize, base.dequantize_fn, base.kind,
            base.row_meta, base.dequantize_kind)

    def quantize_native(self, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        from qf.errors import InvalidWeightsError

        if x.shape[0] % self.nrows:
            raise InvalidWeightsError(
                f"{self.name}: the number of rows ({x.shape[0]}) is not a multiple of {self.nrows}")
        return _mod("_repack_kernels").repack(self.base_name, self.base.quantize_native(x, imatrix), x.shape[1])

    def dequantize(self, data: np.ndarray, n_per_row: int) -> np.ndarray:
        data = np.ascontiguousarray(data, np.uint8)
        return self.base.dequantize(_mod("_repack_kernels").unpack(self.base_name, data, n_per_row), n_per_row)


def _k(name: str, type_size: int, quantize: str, dequantize: str, kind: int | None = None) -> KernelCodec:
    return KernelCodec(name, QK_K, type_size, "_k_kernels", quantize, dequantize, kind)


Q6_0 = KernelCodec("Q6_0", 32, 26, "_k_kernels", "quantize_q6_0", "dequantize_q6_0")
IQ2_K = _k("IQ2_K", 76, "quantize_iq2_k", "dequantize_iq2_k")
IQ3_K = _k("IQ3_K", 110, "quantize_iq3_k", "dequantize_iq3_k")
IQ4_K = _k("IQ4_K", 144, "quantize_iq456_k", "dequantize_iq4_k", 4)
IQ5_K = _k("IQ5_K", 176, "quantize_iq456_k", "dequantize_iq5_k", 5)
IQ6_K = _k("IQ6_K", 212, "quantize_iq456_k", "dequantize_iq6_k", 6)
IQ2_KS = KernelCodec("IQ2_KS", QK_K, 70, "_ks_kernels", "quantize_iq2_ks", "dequantize_iq2_ks", row_meta=2)
IQ3_KS = KernelCodec("IQ3_KS", QK_K, 102, "_ks_kernels", "quantize_iq3_ks", "dequantize_iq3_ks", row_meta=2)
IQ2_KL = KernelCodec("IQ2_KL", QK_K, 86, "_ks_kernels", "quantize_iq2_kl", "dequantize_iq2_kl", row_meta=2)
IQ4_KSS = KernelCodec("IQ4_KSS", QK_K, 128, "_ks_kernels", "quantize_iq4_kss", "dequantize_iq4_kss", row_meta=4)
IQ4_KS = KernelCodec("IQ4_KS", QK_K, 136, "_k_kernels", "quantize_iq45_ks", "dequantize_iq45_ks", 4, 4, True)
IQ5_KS = KernelCodec("IQ5_KS", QK_K, 168, "_k_kernels", "quantize_iq45_ks", "dequantize_iq45_ks", 5, 4, True)

Q6_0_R4 = RepackCodec("Q6_0_R4", "Q6_0", Q6_0, "quantize_q6_0_qhelper")
IQ2_K_R4 = RepackCodec("IQ2_K_R4", "IQ2_K", IQ2_K)
IQ3_K_R4 = RepackCodec("IQ3_K_R4", "IQ3_K", IQ3_K)
IQ4_K_R4 = RepackCodec("IQ4_K_R4", "IQ4_K", IQ4_K)
IQ5_K_R4 = RepackCodec("IQ5_K_R4", "IQ5_K", IQ5_K)


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


IQ2_KT = TrellisCodec("IQ2_KT", QK_K, 68, "_kt_kernels", "quantize_iq2_kt", "dequantize_iq2_kt", row_meta=4)
IQ1_KT = TrellisCodec("IQ1_KT", QK_K, 56, "_kt_kernels", "quantize_iq1_kt", "dequantize_iq1_kt", row_meta=4)
IQ3_KT = TrellisCodec("IQ3_KT", QK_K, 100, "_kt_kernels", "quantize_iq3_kt", "dequantize_iq3_kt", row_meta=4)


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


IQ4_KT = IQ4KTCodec("IQ4_KT", QK_K, 128, "_kt_kernels", "quantize_iq4_kt", "dequantize_iq4_kt", row_meta=4)
IQ4_KS_R4 = RepackCodec("IQ4_KS_R4", "IQ4_KS", IQ4_KS)
IQ5_KS_R4 = RepackCodec("IQ5_KS_R4", "IQ5_KS", IQ5_KS)
