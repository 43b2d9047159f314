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
                 kind: int | None = None) -> None:
        self.name = name
        self.block_size = block_size
        self.type_size = type_size
        self.module = module
        self.quantize_fn = quantize
        self.dequantize_fn = dequantize
        self.kind = kind

    def row_bytes(self, n_per_row: int) -> int:
        return n_per_row // self.block_size * self.type_size

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
        getattr(_mod(self.module), self.dequantize_fn)(data, n_per_row, out)
        return out


class RepackCodec(Codec):
    """A row-interleaved ``_R4``/``_R8`` type: ``nrows`` consecutive rows quantized by the base codec, then
    interleaved (ik's ``quantize_repack``).  The number of rows must be a multiple of ``nrows``."""

    def __init__(self, name: str, base: Codec, nrows: int, repack: str, unpack: str) -> None:
        self.name = name
        self.base = base
        self.nrows = nrows
        self.repack_fn = repack
        self.unpack_fn = unpack

    def quantize_native(self, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        from qf.errors import InvalidWeightsError

        if x.shape[0] % self.nrows:
            raise InvalidWeightsError(
                f"{self.name}: the number of rows ({x.shape[0]}) is not a multiple of {self.nrows}")
        plain = self.base.quantize_native(x, imatrix)
        out = np.empty_like(plain)
        getattr(_mod("_repack_kernels"), self.repack_fn)(plain, x.shape[1], out)
        return out

    def dequantize(self, data: np.ndarray, n_per_row: int) -> np.ndarray:
        data = np.ascontiguousarray(data, np.uint8)
        plain = np.empty_like(data)
        getattr(_mod("_repack_kernels"), self.unpack_fn)(data, n_per_row, plain)
        return self.base.dequantize(plain, n_per_row)


def _k(name: str, type_size: int, quantize: str, dequantize: str, kind: int | None = None) -> KernelCodec:
    return KernelCodec(name, QK_K, type_size, "_k_kernels", quantize, dequantize, kind)


Q6_0 = KernelCodec("Q6_0", 32, 26, "_k_kernels", "quantize_q6_0", "dequantize_q6_0")
IQ2_K = _k("IQ2_K", 76, "quantize_iq2_k", "dequantize_iq2_k")
IQ3_K = _k("IQ3_K", 110, "quantize_iq3_k", "dequantize_iq3_k")
IQ4_K = _k("IQ4_K", 144, "quantize_iq456_k", "dequantize_iq4_k", 4)
IQ5_K = _k("IQ5_K", 176, "quantize_iq456_k", "dequantize_iq5_k", 5)
IQ6_K = _k("IQ6_K", 212, "quantize_iq456_k", "dequantize_iq6_k", 6)
