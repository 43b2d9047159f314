"""The ``llama.cpp`` forward engine for ``qf imatrix``: llama.cpp computes the forward pass, qf collects.

llama.cpp (through llama-cpp-python's low-level ctypes API, the optional extra ``qf[llama-cpp]``) runs the model
with an eval callback on its graph scheduler (``llama_context_params.cb_eval``), the hook ``llama-imatrix`` uses.
The callback answers the scheduler's "do you want this node?" exactly as ``imatrix.cpp``'s ``collect_imatrix``
does (every ``mul_mat_id``; a ``mul_mat`` whose float32 input has at least 16 rows and whose weight is a ``blk.*``
tensor, or ``output.weight`` with ``--process-output``), so llama.cpp cuts its graph at the same nodes as
llama-imatrix, and then adds ``Σx²`` of the multiply's input into qf's :class:`ImatrixStats` in the same row order
(numba kernels in ``_kernels.py``).  The decode loop is ``compute_imatrix``'s: ``n_batch // n_ctx`` chunks per
``llama_decode``, the KV cache cleared per group, BOS put first in every chunk when the vocabulary adds one, every
position an output (which also keeps llama.cpp from skipping the last layer's FFN for non-output rows), and the
perplexity over the second half of every chunk.  The context is made as ``common_init_from_params`` makes
llama-imatrix's (``swa_full`` off, flash attention auto, F16 KV cache, no warm-up).

So the counts equal llama-imatrix's and the sums are the same float32 arithmetic on the same activations; with
the same llama.cpp build and thread count they are bit-identical.  This covers every architecture the bundled
llama.cpp runs (gemma2/3, phi3, mistral3, gpt-oss, granite, olmo, …).  llama.cpp never runs an MTP/NextN head here
(nor does llama-imatrix): with ``--mtp``, on an architecture whose MTP head qf's numpy pass has (glm4moe,
deepseek2), the callback also copies the LM head's input — the trunk's normed hidden states — and qf's numpy MTP
head runs on them after every chunk group (``mtp_forward``): llama.cpp's trunk, qf's head.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qf.errors import ImatrixError, UsageError

from . import _kernels as kernels
from .collect import CollectOptions, CollectResult, Entry, ImatrixStats, Perplexity, chunk_tokens

GGML_OP_MUL_MAT = 29
GGML_OP_MUL_MAT_ID = 30
GGML_TYPE_F32 = 0
GGML_LOG_LEVEL_WARN = 3
LLAMA_FLASH_ATTN_TYPE_AUTO = -1

#: llama-cpp-python's version whose llama.cpp (0c1e570) this module was written against
LLAMA_CPP_PYTHON_VERSION = "0.3.36"


class GGMLTensor(ctypes.Structure):
    """``struct ggml_tensor`` of ggml.h (llama.cpp 0c1e570); checked against ``ggml_tensor_overhead()`` on load."""


GGMLTensor._fields_ = [
    ("type", ctypes.c_int),
    ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * 4),
    ("nb", ctypes.c_size_t * 4),
    ("op", ctypes.c_int),
    ("op_params", ctypes.c_int32 * 16),
    ("flags", ctypes.c_int32),
    ("src", ctypes.c_void_p * 10),
    ("view_src", ctypes.c_void_p),
    ("view_offs", ctypes.c_size_t),
    ("data", ctypes.c_void_p),
    ("name", ctypes.c_char * 64),
    ("extra", ctypes.c_void_p),
    ("padding", ctypes.c_char * 8),
]
#: sizeof(struct ggml_object): offs, size, next, type + 4 bytes padding
GGML_OBJECT_SIZE = 32


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as exc:
        raise UsageError(
            "the llama.cpp imatrix engine needs llama-cpp-python (pip install 'qf[llama-cpp]', i.e."
            f" llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}); or use --engine numpy"
        ) from exc
    except OSError as exc:  # the package is there but its shared library does not load
        raise UsageError(f"llama-cpp-python is installed but its library does not load: {exc}") from None
    return llama_cpp


class _GGML:
    """The few libggml-base functions the callback needs, and the layout checks."""

    _instance: _GGML | None = None

    def __init__(self, llama_cpp) -> None:
        lib_dir = Path(llama_cpp.__file__).resolve().parent / "lib"
        candidates = sorted(lib_dir.glob("libggml-base.*")) + sorted(lib_dir.glob("ggml-base.*"))
        if not candidates:
            raise UsageError(f"llama-cpp-python's libggml-base was not found in {lib_dir}")
        lib = ctypes.CDLL(str(candidates[0]))
        lib.ggml_backend_buffer_is_host.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_buffer_is_host.restype = ctypes.c_bool
        lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
        lib.ggml_backend_tensor_get.restype = None
        lib.ggml_nbytes.argtypes = [ctypes.c_void_p]
        lib.ggml_nbytes.restype = ctypes.c_size_t
        lib.ggml_op_name.argtypes = [ctypes.c_int]
        lib.ggml_op_name.restype = ctypes.c_char_p
        lib.ggml_tensor_overhead.argtypes = []
        lib.ggml_tensor_overhead.restype = ctypes.c_size_t
        self.lib = lib
        size = lib.ggml_tensor_overhead() - GGML_OBJECT_SIZE
        if size != ctypes.sizeof(GGMLTensor):
            raise UsageError(f"this llama-cpp-python's struct ggml_tensor has {size} bytes, qf expects"
                             f" {ctypes.sizeof(GGMLTensor)} (written for llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION})")
        for op, name in ((GGML_OP_MUL_MAT, b"MUL_MAT"), (GGML_OP_MUL_MAT_ID, b"MUL_MAT_ID")):
            if lib.ggml_op_name(op) != name:
                raise UsageError(f"this llama-cpp-python's ggml op {op} is {lib.ggml_op_name(op)!r}, not {name!r}"
                                 f" (qf was written for llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION})")

    @classmethod
    def get(cls, llama_cpp) -> _GGML:
        if cls._instance is None:
            cls._instance = cls(llama_cpp)
        return cls._instance


class _Memory:
    """A numpy view of raw memory (no copy) through the array interface."""

    __slots__ = ("__array_interface__",)

    def __init__(self, address: int, count: int, typestr: str) -> None:
        self.__array_interface__ = {"data": (address, False), "shape": (count,), "typestr": typestr, "version": 3}


def _view(address: int, count: int, dtype: str = "<f4") -> np.ndarray:
    return np.asarray(_Memory(address, count, dtype))


def _filter_name(raw: bytes) -> str:
    """imatrix.cpp's ``filter_tensor_name``: ``CUDA0#blk.0.attn_k.weight#0`` -> ``blk.0.attn_k.weight``."""
    name = raw.decode("utf-8", errors="replace")
    p = name.find("#")
    if p >= 0:
        rest = name[p + 1:]
        q = rest.find("#")
        name = rest[:q] if q >= 0 else rest
    return name


_log_callback = None


def default_threads() -> int:
    """The CPUs this process may run on (llama.cpp's default is the physical cores; pass -t to match a run)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _tokenize(L, vocab, text: str | bytes, parse_special: bool) -> np.ndarray:
    """``common_tokenize(vocab, text, add_special=true, parse_special)``."""
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    n_max = len(data) + 2
    out = (L.llama_token * n_max)()
    n = L.llama_tokenize(vocab, data, len(data), out, n_max, True, parse_special)
    if n < 0:
        n_max = -n
        out = (L.llama_token * n_max)()
        n = L.llama_tokenize(vocab, data, len(data), out, n_max, True, parse_special)
    if n < 0:
        raise UsageError("llama.cpp could not tokenize the text")
    return np.ctypeslib.as_array(out)[:n].astype(np.int32)


def _quiet_logs(llama_cpp, verbose: bool) -> None:
    """Route llama.cpp's log to stderr at warning level and above only (everything with ``verbose``)."""
    global _log_callback
    import sys

    @llama_cpp.llama_log_callback
    def callback(level, text, _user_data):
        if verbose or (level >= GGML_LOG_LEVEL_WARN and level != 5):  # 5 = continuation of the previous line
            sys.stderr.write(text.decode("utf-8", errors="replace"))

    _log_callback = callback  # keep it alive
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


class LlamaCppEngine:
    """A llama.cpp model and context with qf's collector on its graph callback.

    ``LlamaCppEngine(model_path, n_threads)`` loads the model (its vocabulary tokenizes, :meth:`tokenize`);
    :meth:`collect` runs llama-imatrix's loop over the chunks and returns a :class:`CollectResult`.  Close it (or use
    it as a context manager) to free llama.cpp's memory.
    """

    name = "llama.cpp"

    def __init__(self, model_path: str | os.PathLike[str], n_threads: int | None = None,
                 verbose: bool = False) -> None:
        self._model = self._ctx = self._batch = self._pool = None
        self.model_path = str(model_path)
        if not Path(self.model_path).is_file():
            raise UsageError(f"model file {self.model_path} does not exist")
        L = _import_llama_cpp()
        self._L = L
        self._ggml = _GGML.get(L)
        self.n_threads = n_threads or default_threads()
        _quiet_logs(L, verbose)
        L.llama_backend_init()
        mparams = L.llama_model_default_params()
        self._model = L.llama_model_load_from_file(self.model_path.encode(), mparams)
        if not self._model:
            raise UsageError(f"llama.cpp could not load {self.model_path} (see its log above)")
        self._vocab = L.llama_model_get_vocab(self._model)
        self.n_vocab = int(L.llama_vocab_n_tokens(self._vocab))
        self.add_bos = bool(L.llama_vocab_get_add_bos(self._vocab))
        self.add_eos = bool(L.llama_vocab_get_add_eos(self._vocab))
        self.bos_id = int(L.llama_vocab_bos(self._vocab)) if self.add_bos else None
        self.arch = self.meta("general.architecture") or ""
        self._ctx_key = None
        self._cb = L.ggml_backend_sched_eval_callback(self._callback)
        # collection state, set per run
        self._stats: ImatrixStats | None = None
        self._process_output = False
        self._error: BaseException | None = None
        self._wanted: dict[bytes, str | None] = {}
        self._host_cache: dict[int, bool] = {}
        self._scratch = np.zeros(0, np.uint8)
        self._head: bytes | None = None  # the LM head weight whose input (hidden states) is copied for an MTP head
        self._hidden: list[np.ndarray] = []

    # -- model facts -------------------------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(512)
        n = self._L.llama_model_meta_val_str(self._model, key.encode(), buf, ctypes.sizeof(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    def tokenize(self, text: str | bytes, parse_special: bool = False) -> np.ndarray:
        """``common_tokenize(ctx, text, add_special=true, parse_special)``: what llama-imatrix evaluates."""
        return _tokenize(self._L, self._vocab, text, parse_special)

    # -- context -----------------------------------------------------------------------------------------------------
    def _context(self, n_ctx: int, n_seq: int, n_batch: int, n_ubatch: int):
        key = (n_ctx, n_seq, n_batch, n_ubatch)
        if self._ctx is not None and self._ctx_key == key:
            return self._ctx
        self._free_context()
        L = self._L
        cparams = L.llama_context_default_params()
        # common_context_params_to_llama with llama-imatrix's common_params
        cparams.n_ctx = n_seq * n_ctx
        cparams.n_seq_max = n_seq
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_ubatch
        cparams.n_threads = cparams.n_threads_batch = self.n_threads
        cparams.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO
        cparams.swa_full = False
        cparams.kv_unified = False
        cparams.no_perf = False
        cparams.offload_kqv = True
        cparams.op_offload = True
        cparams.cb_eval = self._cb
        cparams.cb_eval_user_data = None
        ctx = L.llama_init_from_model(self._model, cparams)
        if not ctx:
            raise UsageError(f"llama.cpp could not create a context of {n_seq} x {n_ctx} tokens (see its log above)")
        if L.llama_pooling_type(ctx) != 3 and self.add_eos:  # LLAMA_POOLING_TYPE_LAST = 3
            L.llama_free(ctx)
            raise UsageError("this vocabulary appends EOS to every text; llama-imatrix refuses such models too")
        self._ctx, self._ctx_key = ctx, key
        self._batch = L.llama_batch_init(n_batch, 0, n_seq)
        return ctx

    def _free_context(self) -> None:
        if self._batch is not None:
            self._L.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            self._L.llama_free(self._ctx)
            self._ctx = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._free_context()
        if self._model:
            self._L.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> LlamaCppEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- the graph callback (imatrix.cpp's collect_imatrix) --------------------------------------------------------
    def _wanted_name(self, raw: bytes) -> str | None:
        name = self._wanted.get(raw, ...)
        if name is ...:
            full = _filter_name(raw)
            keep = full.startswith("blk.") or (self._process_output and full == "output.weight")
            name = self._wanted[raw] = full if keep else None
        return name

    def _callback(self, t_ptr: int, ask: bool, _user_data) -> bool:
        try:
            t = GGMLTensor.from_address(t_ptr)
            op = t.op
            if ask:
                if op == GGML_OP_MUL_MAT_ID:
                    return True
                if op != GGML_OP_MUL_MAT:
                    return False
                src0_name = GGMLTensor.from_address(t.src[0]).name
                if self._head is not None and src0_name == self._head:
                    return True
                src1 = GGMLTensor.from_address(t.src[1])
                if src1.ne[1] < 16 or src1.type != GGML_TYPE_F32:
                    return False
                return self._wanted_name(src0_name) is not None
            if op == GGML_OP_MUL_MAT_ID:
                self._collect_mul_mat_id(t)
            elif op == GGML_OP_MUL_MAT:
                src0_name = GGMLTensor.from_address(t.src[0]).name
                if self._head is not None and src0_name == self._head:
                    self._copy_hidden(t)
                    src1 = GGMLTensor.from_address(t.src[1])
                    if src1.ne[1] < 16 or src1.type != GGML_TYPE_F32:  # what llama-imatrix would not have asked for
                        return True
                if self._wanted_name(src0_name) is not None:
                    self._collect_mul_mat(t)
            return True
        except BaseException as exc:  # noqa: BLE001 - reported after llama_decode returns
            if self._error is None:
                self._error = exc
            return False

    def _data(self, tensor: GGMLTensor, tensor_ptr: int) -> int:
        """The address of a tensor's data in host memory (copied out of a device buffer when needed)."""
        buf = tensor.buffer or 0
        is_host = self._host_cache.get(buf)
        if is_host is None:
            is_host = self._host_cache[buf] = bool(self._ggml.lib.ggml_backend_buffer_is_host(buf)) if buf else True
        if is_host:
            return tensor.data
        nbytes = self._ggml.lib.ggml_nbytes(tensor_ptr)
        scratch = np.empty(nbytes, np.uint8)
        self._ggml.lib.ggml_backend_tensor_get(tensor_ptr, scratch.ctypes.data, 0, nbytes)
        self._scratch = scratch  # alive until the next call
        return scratch.ctypes.data

    def _collect_mul_mat(self, t: GGMLTensor) -> None:
        src0 = GGMLTensor.from_address(t.src[0])
        src1_ptr = t.src[1]
        src1 = GGMLTensor.from_address(src1_ptr)
        name = self._wanted_name(src0.name)
        ne = np.array(src1.ne, np.int64)
        nb = np.array(src1.nb, np.int64)
        if nb[0] != 4:
            raise ImatrixError(f"{name}: mul_mat input is not float32 (row stride {nb[0]})")
        n_mat = int(src0.ne[2] * src0.ne[3])
        e = self._entry_dense(name, n_mat, int(ne[0]))
        span = int(((ne - 1) * nb).sum()) // 4 + 1
        x = _view(self._data(src1, src1_ptr), span)
        if not kernels.accumulate_mul_mat(e.sums, x, ne, nb // 4, int(src0.ne[2]), int(src0.ne[3])):
            raise ImatrixError(f"non-finite values detected in {name}")
        e.counts += int(ne[1] * ne[2] * ne[3]) // n_mat

    def _copy_hidden(self, t: GGMLTensor) -> None:
        """Keep the LM head's input rows (float32, contiguous: the normed hidden states of this ubatch)."""
        src1_ptr = t.src[1]
        src1 = GGMLTensor.from_address(src1_ptr)
        ne0, ne1 = int(src1.ne[0]), int(src1.ne[1] * src1.ne[2] * src1.ne[3])
        if src1.type != GGML_TYPE_F32 or src1.nb[0] != 4 or src1.nb[1] != 4 * ne0:
            raise ImatrixError("--mtp: the LM head's input is not contiguous float32")
        self._hidden.append(_view(self._data(src1, src1_ptr), ne0 * ne1).reshape(ne1, ne0).copy())

    def _entry_dense(self, name: str, n_mat: int, ne0: int) -> Entry:
        stats = self._stats
        e = stats.entries.get(name)
        if e is None:
            e = stats.entries[name] = Entry(np.zeros((n_mat, ne0), np.float32), np.zeros(1, np.int64))
            return e
        if e.sums.size != n_mat * ne0:
            raise ImatrixError(f"inconsistent size for {name} ({e.sums.size} vs {n_mat * ne0})")
        e.sums = e.sums.reshape(n_mat, ne0)
        # a single count per dense tensor (merged older files may have one per matrix, all equal)
        if e.counts.size > 1 and np.all(e.counts == e.counts[0]):
            e.counts = e.counts[:1].copy()
        return e

    def _collect_mul_mat_id(self, t: GGMLTensor) -> None:
        src0 = GGMLTensor.from_address(t.src[0])
        src1_ptr, ids_ptr = t.src[1], t.src[2]
        src1, ids = GGMLTensor.from_address(src1_ptr), GGMLTensor.from_address(ids_ptr)
        name = _filter_name(src0.name)
        n_as, ne0, n_tokens = int(src0.ne[2]), int(src1.ne[0]), int(src1.ne[2])
        n_ids = int(ids.ne[0])
        if ids.ne[1] != src1.ne[2]:
            raise ImatrixError(f"{name}: {ids.ne[1]} routed tokens for {src1.ne[2]} input rows")
        if src1.ne[3] != 1:
            raise ImatrixError(f"tensor has more than 3 dimensions: {name}")
        if src1.nb[0] != 4:
            raise ImatrixError(f"{name}: mul_mat_id input is not float32 (row stride {src1.nb[0]})")
        ids_bytes = self._ggml.lib.ggml_nbytes(ids_ptr)
        idv = np.empty(ids_bytes // 4, np.int32)
        self._ggml.lib.ggml_backend_tensor_get(ids_ptr, idv.ctypes.data, 0, ids_bytes)
        e = self._stats.entries.get(name)
        if e is None:
            e = self._stats.entries[name] = Entry(np.zeros((n_as, ne0), np.float32), np.zeros(n_as, np.int64))
        else:
            if e.counts.size == 1 and n_as > 1:  # broadcast, as when loading an old imatrix
                e.counts = np.repeat(e.counts, n_as)
            if e.sums.size != ne0 * n_as:
                raise ImatrixError(f"inconsistent size for {name} ({e.sums.size} vs {ne0 * n_as})")
            if e.counts.size != n_as:
                raise ImatrixError(f"inconsistent expert count for {name} ({e.counts.size} vs {n_as})")
            e.sums = e.sums.reshape(n_as, ne0)
        ne1 = int(src1.ne[1])
        st1, st2 = int(src1.nb[1]) // 4, int(src1.nb[2]) // 4
        span = (ne1 - 1) * st1 + (n_tokens - 1) * st2 + ne0
        x = _view(self._data(src1, src1_ptr), span)
        bad = kernels.accumulate_mul_mat_id(e.sums, e.counts, x, ne0, ne1, st1, st2, idv, int(ids.nb[0]) // 4,
                                            int(ids.nb[1]) // 4, n_ids, n_tokens)
        if bad == n_as + 1:
            raise ImatrixError(f"{name}: expert id out of range 0..{n_as - 1}")
        if bad >= 0:
            raise ImatrixError(f"non-finite values detected in {name}")

    def _log_softmax(self, logits: np.ndarray, targets: np.ndarray, out: np.ndarray) -> None:
        """``process_logits``: the rows split among as many threads as CPUs (as llama-imatrix's workers)."""
        from concurrent.futures import ThreadPoolExecutor

        n_workers = min(default_threads(), logits.shape[0])
        if n_workers <= 1:
            kernels.log_softmax_nll(logits, targets, out)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(n_workers, thread_name_prefix="qf-ppl")
        bounds = np.linspace(0, logits.shape[0], n_workers + 1).astype(int)
        jobs = [self._pool.submit(kernels.log_softmax_nll, logits[a:b], targets[a:b], out[a:b])
                for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        for job in jobs:
            job.result()

    # -- llama-imatrix's compute_imatrix -----------------------------------------------------------------------------
    def collect(self, tokens: np.ndarray, opts: CollectOptions, stats: ImatrixStats | None = None,
                progress: Callable[[int, int, Perplexity], None] | None = None,
                mtp_forward=None) -> CollectResult:
        """Run the chunks of ``tokens`` through llama.cpp, accumulating into ``stats`` (a new one if None).

        ``opts.bos_id`` is ignored: llama.cpp's vocabulary decides (``llama_vocab_get_add_bos``).  With ``opts.mtp``
        and ``mtp_forward`` (qf's numpy forward pass of this model, which has an MTP head fed the normed hidden
        states), that head runs on llama.cpp's hidden states after every chunk group."""
        import attrs

        L = self._L
        n_ctx = opts.n_ctx
        if n_ctx < 1:
            raise UsageError("-c/--ctx-size must be positive")
        if not (opts.n_batch < n_ctx or opts.n_batch % n_ctx == 0):
            raise UsageError(f"-b {opts.n_batch} must be smaller than -c {n_ctx} or a multiple of it")
        chunks = chunk_tokens(tokens, attrs.evolve(opts, bos_id=self.bos_id))
        if chunks.size and (chunks.min() < 0 or chunks.max() >= self.n_vocab):
            raise UsageError(f"token ids must be in 0..{self.n_vocab - 1}")
        n_seq = max(1, opts.n_batch // n_ctx)
        n_batch = min(opts.n_batch, n_seq * n_ctx)
        num_batches = (n_ctx + n_batch - 1) // n_batch
        stats = stats if stats is not None else ImatrixStats(n_ctx)
        if stats.chunk_size != n_ctx:
            raise UsageError(f"chunk size {stats.chunk_size} of the merged data differs from -c {n_ctx}")
        warnings = []
        run_mtp = bool(opts.mtp and mtp_forward is not None and mtp_forward.has_mtp
                       and mtp_forward.mtp_hidden_normed)
        if opts.mtp and not run_mtp:
            warnings.append("--mtp: llama.cpp does not run MTP/NextN heads (nor does llama-imatrix), and qf has no"
                            " MTP head for this model to run on its hidden states; collecting the trunk only")
        self._head = None
        if run_mtp:
            from qf_arches.forward.common import output_name

            self._head = output_name(mtp_forward.model).encode()
        mtp_ppl = Perplexity() if run_mtp else None
        ctx = self._context(n_ctx, n_seq, n_batch, opts.n_ubatch)
        batch = self._batch
        n_vocab = self.n_vocab
        token_v = np.ctypeslib.as_array(batch.token, shape=(n_batch,))
        pos_v = np.ctypeslib.as_array(batch.pos, shape=(n_batch,))
        nseq_v = np.ctypeslib.as_array(batch.n_seq_id, shape=(n_batch,))
        logits_v = np.ctypeslib.as_array(batch.logits, shape=(n_batch,))
        nseq_v[:] = 1
        logits_v[:] = 1  # every position an output, as llama-imatrix
        seq_of_row = np.repeat(np.arange(n_seq), min(n_ctx, n_batch))
        for r in range(n_batch):
            batch.seq_id[r][0] = int(seq_of_row[r])
        self._stats, self._process_output, self._error = stats, opts.process_output, None
        self._wanted.clear()
        self._host_cache.clear()
        ppl = Perplexity()
        first = n_ctx // 2
        n_chunks = chunks.shape[0]
        memory = L.llama_get_memory(ctx)
        logits_buf = np.empty((n_ctx, n_vocab), np.float32) if opts.compute_ppl and num_batches > 1 else None
        nll = np.empty(n_ctx, np.float64)
        t0 = time.perf_counter()
        if progress is not None:
            progress(0, n_chunks, ppl)
        try:
            for i in range(0, n_chunks, n_seq):
                group = chunks[i:i + n_seq]
                n_seq_batch = group.shape[0]
                L.llama_memory_clear(memory, True)
                self._hidden.clear()
                for j in range(num_batches):
                    start = j * n_batch
                    size = min(n_ctx - start, n_batch)
                    n = n_seq_batch * size
                    token_v[:n] = group[:, start:start + size].reshape(-1)
                    pos_v[:n] = np.tile(np.arange(start, start + size, dtype=np.int32), n_seq_batch)
                    batch.n_tokens = n
                    rc = L.llama_decode(ctx, batch)
                    if self._error is not None:
                        raise self._error
                    if rc != 0:
                        raise ImatrixError(f"llama_decode failed ({rc}) on chunk {i + 1}")
                    if logits_buf is not None:
                        logits_buf[start:start + size] = np.ctypeslib.as_array(L.llama_get_logits(ctx),
                                                                               shape=(size, n_vocab))
                if opts.compute_ppl:
                    for s in range(n_seq_batch):
                        if logits_buf is not None:
                            all_logits = logits_buf
                        else:
                            all_logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, s * n_ctx),
                                                               shape=(n_ctx, n_vocab))
                        m = n_ctx - 1 - first
                        self._log_softmax(all_logits[first:first + m], group[s, first + 1:], nll[:m])
                        ppl.add_nll(nll[:m])
                if run_mtp:
                    self._run_mtp(mtp_forward, group, opts, n_batch, n_seq, stats, mtp_ppl)
                if progress is not None:
                    progress(min(i + n_seq, n_chunks), n_chunks, ppl)
        finally:
            self._stats = None
            self._head = None
            self._hidden.clear()
        return CollectResult(stats, ppl, mtp_ppl, n_chunks, n_chunks * n_ctx, time.perf_counter() - t0, warnings)

    def _run_mtp(self, forward, group: np.ndarray, opts: CollectOptions, n_batch: int, n_seq: int,
                 stats: ImatrixStats, mtp_ppl: Perplexity) -> None:
        """qf's MTP head on the hidden states llama.cpp's decode of ``group`` left (as the numpy engine's collect)."""
        from .collect import BatchLayout, Recorder

        n_seq_batch, n_ctx = group.shape
        hidden = np.concatenate(self._hidden) if self._hidden else np.zeros((0, 0), np.float32)
        if hidden.shape[0] != n_seq_batch * n_ctx:
            raise ImatrixError(f"--mtp: llama.cpp's LM head saw {hidden.shape[0]} rows, the chunks have"
                               f" {n_seq_batch * n_ctx}")
        hidden = hidden.reshape(n_seq_batch, n_ctx, -1)
        self._hidden.clear()
        first = n_ctx // 2
        layout = BatchLayout.llama_cpp(n_seq_batch, n_ctx - 1, n_batch, opts.n_ubatch, one_stream=n_seq == 1)
        mtp_from = max(first - 1, 0) if opts.compute_ppl else None
        head = forward.mtp(group, hidden, Recorder(stats, layout), mtp_from)
        if head is not None and mtp_from is not None:
            # row k (token at position k+1, hidden of position k) predicts the token at position k+2
            w = forward.model.get(head.weight)
            for s in range(n_seq_batch):
                mtp_ppl.add(head.rows[s, :n_ctx - 2 - mtp_from] @ w.T, group[s, mtp_from + 2:])


def collect_llama_cpp(model_path: str | os.PathLike[str], tokens: np.ndarray | str | bytes, opts: CollectOptions,
                      stats: ImatrixStats | None = None, progress=None, *, parse_special: bool = False,
                      n_threads: int | None = None) -> CollectResult:
    """One-shot: load ``model_path`` in llama.cpp, tokenize ``tokens`` if it is text, collect, free."""
    with LlamaCppEngine(model_path, n_threads) as engine:
        if isinstance(tokens, (str, bytes)):
            tokens = engine.tokenize(tokens, parse_special)
        return engine.collect(np.asarray(tokens), opts, stats, progress)


def tokenize(model_path: str | os.PathLike[str], text: str | bytes, parse_special: bool = False) -> np.ndarray:
    """Tokenize with llama.cpp's own tokenizer for the model (vocabulary only), as llama-imatrix does."""
    L = _import_llama_cpp()
    _quiet_logs(L, False)
    L.llama_backend_init()
    params = L.llama_model_default_params()
    params.vocab_only = True
    model = L.llama_model_load_from_file(str(model_path).encode(), params)
    if not model:
        raise UsageError(f"llama.cpp could not load the vocabulary of {model_path}")
    try:
        return _tokenize(L, L.llama_model_get_vocab(model), text, parse_special)
    finally:
        L.llama_model_free(model)


__all__ = ["LlamaCppEngine", "collect_llama_cpp", "tokenize"]
