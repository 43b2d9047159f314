"""ctypes access to llama.cpp's C quantizers in the libggml-base.so that ``pip install llama-cpp-python==0.3.36``
builds — the reference qf is measured against (speed) and can be diffed with (bytes) on any input.

    from cggml import CGGML
    c = CGGML.load()              # None if llama-cpp-python is not installed
    data = c.quantize(type_id, x, imatrix)          # uint8 (rows, row_bytes), as ggml_quantize_chunk writes it
    y = c.dequantize(type_id, data, n_per_row)     # float32, the type's to_float
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os

import numpy as np


class _Traits(ctypes.Structure):
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def find_libggml_base() -> str | None:
    explicit = os.environ.get("QF_LIBGGML_BASE")
    if explicit:
        return explicit
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        hits = sorted(glob.glob(os.path.join(root, "lib", "libggml-base.so*")))
        if hits:
            return hits[0]
    return None


class CGGML:
    def __init__(self, path: str) -> None:
        self.path = path
        self.lib = ctypes.CDLL(path)
        self.lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        self.lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                                 ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        self.lib.ggml_row_size.restype = ctypes.c_size_t
        self.lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        self.lib.ggml_get_type_traits.restype = ctypes.POINTER(_Traits)
        self.lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
        self.lib.ggml_quantize_init.argtypes = [ctypes.c_int]

    @classmethod
    def load(cls) -> CGGML | None:
        path = find_libggml_base()
        return None if path is None else cls(path)

    def init(self, type_id: int) -> None:
        self.lib.ggml_quantize_init(type_id)

    def quantize(self, type_id: int, x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        rows, n = x.shape
        row_size = self.lib.ggml_row_size(type_id, n)
        out = np.zeros((rows, row_size), np.uint8)
        im = None if imatrix is None else np.ascontiguousarray(imatrix, np.float32)
        self.lib.ggml_quantize_chunk(type_id, x.ctypes.data, out.ctypes.data, 0, rows, n,
                                     None if im is None else im.ctypes.data)
        return out

    def dequantize(self, type_id: int, data: np.ndarray, n_per_row: int) -> np.ndarray:
        traits = self.lib.ggml_get_type_traits(type_id).contents
        fn = _TO_FLOAT(traits.to_float)
        data = np.ascontiguousarray(data, np.uint8)
        out = np.empty((data.shape[0], n_per_row), np.float32)
        fn(data.ctypes.data, out.ctypes.data, out.size)
        return out
