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


# ---------------------------------------------------------------------------------------------------------------------
# llama.cpp's C in a child process: an input on which ggml aborts (GGML_ASSERT) kills the child, not the test run


class CAborted(Exception):
    """llama.cpp's C died on this input (a GGML_ASSERT abort or a crash); ``exitcode`` is the child's (-signal)."""

    def __init__(self, exitcode: int | None) -> None:
        super().__init__(f"llama.cpp's C died (exit code {exitcode})")
        self.exitcode = exitcode


def _serve(conn, path: str) -> None:
    """The helper process: loads the library, initialises each type's tables once (``ggml_quantize_init``; the grid
    types take seconds), then runs every call in a forked child of itself, so an abort kills only that child."""
    import faulthandler
    import pickle

    faulthandler.disable()  # a crash of llama.cpp's C is reported by the parent (CAborted), not dumped here
    os.environ["GGML_NO_BACKTRACE"] = "1"  # GGML_ASSERT: no gdb backtrace (slow, and noise), just the abort
    c = CGGML(path)
    c.lib.ggml_validate_row_data.restype = ctypes.c_bool
    c.lib.ggml_validate_row_data.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    while True:
        try:
            op, type_id, *args = conn.recv()
        except EOFError:
            return
        c.init(type_id)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: one call, its result pickled into the pipe
            os.close(read_end)
            if op == "quantize":
                result = c.quantize(type_id, *args)
            elif op == "dequantize":
                result = c.dequantize(type_id, *args)
            else:
                data = np.ascontiguousarray(args[0], np.uint8)
                result = bool(c.lib.ggml_validate_row_data(type_id, data.ctypes.data, data.nbytes))
            with os.fdopen(write_end, "wb") as fh:
                pickle.dump(result, fh)
            os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as fh:
            payload = fh.read()
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        conn.send(("ok", pickle.loads(payload)) if code == 0 and payload else ("died", code))


class CWorker:
    """:class:`CGGML`'s calls in a helper process (spawned once; each call runs in a fork of it): an input on which
    llama.cpp aborts raises :class:`CAborted` here instead of killing the test run."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._proc = None
        self._conn = None
        CGGML(path)  # fail here, in the parent, if the library cannot be loaded at all

    def _start(self) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # a clean process (no threads): safe to fork per call
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self.path), daemon=True)
        self._proc.start()
        child.close()

    def _call(self, *request):
        if self._proc is None or not self._proc.is_alive():
            self._start()
        try:
            self._conn.send(request)
            status, value = self._conn.recv()
        except (EOFError, ConnectionError, BrokenPipeError):  # the helper itself died: start a new one next time
            self._proc.join(timeout=10)
            code, self._proc = self._proc.exitcode, None
            raise CAborted(code) from None
        if status != "ok":
            raise CAborted(value)
        return value

    def quantize(self, type_id: int, x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
        return self._call("quantize", type_id, np.ascontiguousarray(x, np.float32),
                          None if imatrix is None else np.ascontiguousarray(imatrix, np.float32))

    def dequantize(self, type_id: int, data: np.ndarray, n_per_row: int) -> np.ndarray:
        return self._call("dequantize", type_id, np.ascontiguousarray(data, np.uint8), n_per_row)

    def validate(self, type_id: int, data: np.ndarray) -> bool:
        return self._call("validate", type_id, data)

    def close(self) -> None:
        if self._proc is not None:
            self._conn.close()
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.kill()
            self._proc = None


def require_cggml() -> CGGML:
    """llama.cpp's C library, or fail (where it is required: tox -e e2e, CI with llama-cpp-python) / skip."""
    from paths import missing

    path = find_libggml_base()
    if path is None:
        missing("cggml", "libggml-base (llama.cpp's C library) not found: install llama-cpp-python==0.3.36"
                " (tox -e e2e) or set QF_LIBGGML_BASE")
    try:
        return CGGML(path)
    except OSError as exc:
        missing("cggml", f"libggml-base at {path} could not be loaded: {exc}")
