"""ctypes access to ik_llama.cpp's C quantizers, for tests and the benchmark.

The library is the ``libggml.so`` of an ik_llama.cpp build (see plugins/qf-ik/REFERENCE.md for the commit and the
flags), named by the environment variable ``QF_IK_LIB``.

    from ikc import IKC
    c = IKC.load()                                  # None if QF_IK_LIB is unset
    data = c.quantize(type_id, x, imatrix)          # uint8 (rows, row_bytes), as ggml_quantize_chunk writes it
    y = c.dequantize(type_id, data, n_per_row)      # float32, the type's to_float (row by row)
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class _Traits(ctypes.Structure):
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
        ("from_float_to_mat", ctypes.c_void_p),
        ("vec_dot", ctypes.c_void_p),
        ("vec_dot_type", ctypes.c_int),
        ("nrows", ctypes.c_int64),
        ("ncols", ctypes.c_int64),
        ("gemv", ctypes.c_void_p),
        ("gemm", ctypes.c_void_p),
        ("row_meta_size", ctypes.c_int64),
    ]


class _InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


class CAborted(RuntimeError):
    """ik's C quantizer aborted (in a child process) on an input."""


class IKC:
    def __init__(self, path: str) -> None:
        self.path = path
        # lazy binding: a libggml built without ik's flash-attention objects (-DGGML_IQK_FLASH_ATTENTION=OFF, much
        # quicker to build) leaves iqk_fa_* unresolved, and quantizing never calls them
        lib = self.lib = ctypes.CDLL(path, mode=os.RTLD_LAZY)
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
        lib.ggml_row_size.restype = ctypes.c_size_t
        lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        lib.ggml_internal_get_type_traits.restype = _Traits
        lib.ggml_internal_get_type_traits.argtypes = [ctypes.c_int]
        lib.ggml_quantize_init.argtypes = [ctypes.c_int]
        # ggml_init fills the fp16 -> fp32 table that the to_float functions read
        lib.ggml_init.restype = ctypes.c_void_p
        lib.ggml_init.argtypes = [_InitParams]
        lib.ggml_free.argtypes = [ctypes.c_void_p]
        lib.ggml_free(lib.ggml_init(_InitParams(1 << 16, None, True)))

    @classmethod
    def load(cls) -> IKC | None:
        path = os.environ.get("QF_IK_LIB")
        return cls(path) if path else None

    def init(self, type_id: int) -> None:
        self.lib.ggml_quantize_init(type_id)

    def row_size(self, type_id: int, n_per_row: int) -> int:
        return int(self.lib.ggml_row_size(type_id, n_per_row))

    def quantize(self, type_id: int, x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        rows, n = x.shape
        out = np.zeros((rows, self.row_size(type_id, n)), np.uint8)
        im = None if imatrix is None else np.ascontiguousarray(imatrix, np.float32)
        self.lib.ggml_quantize_chunk(type_id, x.ctypes.data, out.ctypes.data, 0, rows, n,
                                     None if im is None else im.ctypes.data, None)
        return out

    def quantize_isolated(self, type_id: int, x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
        """:meth:`quantize` in a forked child: some inputs make ik's C abort (an assertion inside its search), which
        must not take the test process with it.  Raises :class:`CAborted` when the child dies."""
        rows = x.shape[0]
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: quantize, send the bytes, leave without running any Python clean-up
            try:
                os.close(read_fd)
                view = memoryview(self.quantize(type_id, x, imatrix).tobytes())
                while view:
                    view = view[os.write(write_fd, view):]
            except BaseException:
                os._exit(1)
            os._exit(0)
        os.close(write_fd)
        chunks = []
        with os.fdopen(read_fd, "rb") as pipe:
            while chunk := pipe.read(1 << 20):
                chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
        data = b"".join(chunks)
        if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0) or not data or len(data) % rows:
            raise CAborted(f"ik's C died on this input (status {status})")
        return np.frombuffer(data, np.uint8).reshape(rows, -1)

    def dequantize(self, type_id: int, data: np.ndarray, n_per_row: int, group: int = 1) -> np.ndarray:
        """``group`` rows per to_float call (4 for the _R4 types, whose to_float decodes 4 interleaved rows)."""
        data = np.ascontiguousarray(data, np.uint8)
        traits = self.lib.ggml_internal_get_type_traits(type_id)
        fn = _TO_FLOAT(traits.to_float)
        out = np.empty((data.shape[0], n_per_row), np.float32)
        for r in range(0, data.shape[0], group):
            fn(data[r].ctypes.data, out[r].ctypes.data, group * n_per_row)
        return out
