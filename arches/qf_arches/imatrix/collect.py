"""``qf imatrix``: collect importance matrices with a numpy forward pass, as llama-imatrix does.

For every matrix multiply on a ``blk.*`` weight, llama-imatrix adds the squares of the multiply's input columns
(``Σx²``) and counts the rows it saw: one sum row and one count per 2-D weight, one per matrix for 3-D weights used
by ``mul_mat`` (MLA's ``attn_k_b``/``attn_v_b``, one per head), and one per expert for ``mul_mat_id`` (the rows routed
to that expert).  The forward passes live in the architecture plugins (``Arch.forward``, a ``"module:attr"``
reference to a factory taking a :class:`ModelWeights` and returning a :class:`ForwardPass`); this module chunks the
tokens, hands batches to the forward pass, accumulates, merges ``--in-file`` data and computes statistics.

Order matters for float32 sums: the :class:`Recorder` adds rows in the order llama.cpp's batch splitter hands them
to the graph (``n_batch // n_ctx`` chunks decoded together, cut into ubatches of ``n_ubatch`` tokens: consecutive
tokens for one sequence, an equal share of every sequence otherwise), so qf's sums differ from llama-imatrix's by
rounding noise of the activations only.

Memory: the model's tensors are memory-mapped; quantized ones are dequantized (``qf.dequantize_rows``) when used and
dropped after, so the working set is one tensor plus one batch of activations.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import attrs
import numpy as np

from qf.errors import ImatrixError, UsageError
from qf.imatrix import DEFAULT_CHUNK_SIZE, Imatrix

#: llama-imatrix ignores plain matrix multiplies whose input has fewer rows than this
MIN_ROWS = 16


# -- accumulation ----------------------------------------------------------------------------------------------------
@attrs.define(eq=False)
class Entry:
    """Σx² ``(n_mat, ne0)`` float32 and row counts of one weight: one count per matrix for experts, a single count
    for 2-D weights and for 3-D weights used by a plain multiply (llama-imatrix's layout)."""

    sums: np.ndarray
    counts: np.ndarray

    @property
    def n_mat(self) -> int:
        return self.sums.shape[0]

    @property
    def ne0(self) -> int:
        return self.sums.shape[1]


@attrs.define(eq=False)
class ImatrixStats:
    """What llama-imatrix's collector keeps: an :class:`Entry` per weight name, the datasets and the chunk size."""

    chunk_size: int = DEFAULT_CHUNK_SIZE
    entries: dict[str, Entry] = attrs.field(factory=dict)
    datasets: list[str] = attrs.field(factory=list)
    #: entries made up rather than collected, with the reason (MLA borrowing)
    notes: list[str] = attrs.field(factory=list)

    def entry(self, name: str, n_mat: int, ne0: int, n_counts: int = 1) -> Entry:
        e = self.entries.get(name)
        if e is None:
            e = self.entries[name] = Entry(np.zeros((n_mat, ne0), np.float32), np.zeros(n_counts, np.int64))
            return e
        if e.sums.size != n_mat * ne0:
            raise ImatrixError(f"inconsistent size for {name}: {e.sums.size} values, now {n_mat * ne0}")
        e.sums = e.sums.reshape(n_mat, ne0)
        if e.counts.size != n_counts:
            if e.counts.size == 1:  # broadcast a single count (as llama-imatrix does for older files)
                e.counts = np.repeat(e.counts, n_counts)
            elif n_counts == 1 and np.all(e.counts == e.counts[0]):
                e.counts = e.counts[:1].copy()
            else:
                raise ImatrixError(f"inconsistent count layout for {name}: {e.counts.size} counts, now {n_counts}")
        return e

    @property
    def chunk_count(self) -> int:
        """llama-imatrix's ``m_last_chunk``: the largest count in whole chunks."""
        counts = [int(e.counts.max()) for e in self.entries.values() if e.counts.size]
        return max(counts, default=0) // max(1, self.chunk_size)

    def merge(self, imatrix: Imatrix, what: str = "") -> None:
        """Add a loaded imatrix (sums and counts add; a legacy file's values scale by ncall · chunk size)."""
        for name, (sums, counts) in imatrix.sums_and_counts(self.chunk_size).items():
            e = self.entries.get(name)
            if e is None:
                self.entries[name] = Entry(sums.astype(np.float32), counts.astype(np.int64))
                continue
            if e.sums.size != sums.size:
                raise ImatrixError(f"{what or imatrix.path}: entry {name!r} has {sums.size} values, the others"
                                   f" have {e.sums.size}")
            if counts.size != e.counts.size:
                if e.counts.size == 1:  # llama-imatrix broadcasts a single count (older files)
                    e.counts = np.repeat(e.counts, counts.size)
                elif counts.size == 1:
                    counts = np.repeat(counts, e.counts.size)
                else:
                    raise ImatrixError(f"{what or imatrix.path}: entry {name!r} has {counts.size} counts, the others"
                                       f" have {e.counts.size}")
            e.sums = (e.sums + sums.reshape(e.sums.shape)).astype(np.float32)
            e.counts = e.counts + counts
        self.datasets.extend(imatrix.datasets)

    def to_imatrix(self, path: str | os.PathLike[str] | None = None) -> Imatrix:
        return Imatrix.from_sums({n: e.sums for n, e in self.entries.items()},
                                 {n: e.counts for n, e in self.entries.items()},
                                 self.datasets, self.chunk_count, self.chunk_size, path)


def load_in_files(paths: Sequence[str | os.PathLike[str]], chunk_size: int) -> ImatrixStats:
    """Merge ``--in-file`` imatrices; they must hold the same tensors with the same sizes."""
    stats = ImatrixStats(chunk_size)
    first: tuple[str, dict[str, int]] | None = None
    for path in paths:
        im = Imatrix.load(path)
        shapes = {name: values.size for name, values in im.entries.items()}
        if first is not None:
            ref_path, ref = first
            only_new, only_ref = sorted(set(shapes) - set(ref)), sorted(set(ref) - set(shapes))
            if only_new or only_ref:
                names = (only_new or only_ref)[:3]
                where = path if only_new else ref_path
                raise ImatrixError(
                    f"--in-file {path} does not match {ref_path}: {len(only_new) + len(only_ref)} tensor(s) are in"
                    f" only one of them (e.g. {', '.join(names)} only in {where})"
                )
            bad = [n for n in shapes if shapes[n] != ref[n]]
            if bad:
                raise ImatrixError(f"--in-file {path} does not match {ref_path}: {bad[0]} has {shapes[bad[0]]}"
                                   f" values there, {ref[bad[0]]} in {ref_path}")
        else:
            first = (str(path), shapes)
        stats.merge(im, f"--in-file {path}")
    return stats


# -- llama.cpp's batch order -----------------------------------------------------------------------------------------
@attrs.frozen(eq=False)
class BatchLayout:
    """``n_seqs`` sequences of ``n_tokens`` tokens, rows numbered ``seq * n_tokens + pos``, and the ubatches (row
    indices, in order) llama.cpp cuts them into."""

    n_seqs: int
    n_tokens: int
    ubatches: tuple[np.ndarray, ...]

    @classmethod
    def llama_cpp(cls, n_seqs: int, n_tokens: int, n_batch: int, n_ubatch: int, one_stream: bool) -> BatchLayout:
        """llama-imatrix's decode calls (``n_batch`` tokens of each sequence) and llama.cpp's splitter:
        ``split_simple`` (consecutive rows) with one KV stream, ``split_equal`` (the same number of tokens from each
        sequence, ``n_ubatch // n_seqs``) with one stream per sequence."""
        rows = np.arange(n_seqs * n_tokens, dtype=np.int64).reshape(n_seqs, n_tokens)
        ubatches = []
        for start in range(0, n_tokens, n_batch):
            call = rows[:, start:min(n_tokens, start + n_batch)]
            if one_stream:
                flat = call.reshape(-1)
                ubatches += [flat[i:i + n_ubatch] for i in range(0, flat.size, n_ubatch)]
            else:
                per_seq = max(1, n_ubatch // n_seqs)
                ubatches += [call[:, i:i + per_seq].reshape(-1) for i in range(0, call.shape[1], per_seq)]
        return cls(n_seqs, n_tokens, tuple(ubatches))

    @classmethod
    def simple(cls, n_seqs: int, n_tokens: int) -> BatchLayout:
        return cls(n_seqs, n_tokens, (np.arange(n_seqs * n_tokens, dtype=np.int64),))

    @property
    def n_rows(self) -> int:
        return self.n_seqs * self.n_tokens


class Recorder:
    """What a forward pass calls before each matrix multiply on a model weight.

    Rows are in sequence-major order (``seq * n_tokens + pos``) for the layout the engine passed with the batch.
    Only ``blk.*`` weights are kept (and ``output.weight`` with ``process_output``), as llama-imatrix does.
    """

    def __init__(self, stats: ImatrixStats, layout: BatchLayout, process_output: bool = False) -> None:
        from qf_arches.imatrix import _kernels as kernels

        self.stats = stats
        self.layout = layout
        self.process_output = process_output
        self._k = kernels
        self._dense = [u for u in layout.ubatches if u.size >= MIN_ROWS]
        self._dense_order = np.concatenate(self._dense) if self._dense else np.zeros(0, np.int64)
        self._order = np.concatenate(layout.ubatches)
        self._bounds = np.cumsum([0] + [u.size for u in layout.ubatches]).astype(np.int64)

    def wants(self, name: str) -> bool:
        return name.startswith("blk.") or (self.process_output and name == "output.weight")

    def _rows(self, x: np.ndarray, what: str) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape[-2] != self.layout.n_rows:
            raise ValueError(f"{what}: {x.shape[-2]} rows, the batch has {self.layout.n_rows}")
        return x

    def dense(self, name: str, x: np.ndarray) -> None:
        """``x`` (rows, ne0): the input of ``mul_mat(name, x)`` for a 2-D weight."""
        if not self.wants(name):
            return
        x = self._rows(x, name)
        e = self.stats.entry(name, 1, x.shape[1])
        self._k.accumulate_rows(e.sums[0], x, self._dense_order)
        e.counts[0] += self._dense_order.size

    def per_matrix(self, name: str, x: np.ndarray) -> None:
        """``x`` (n_mat, rows, ne0): the inputs of a 3-D weight's matrices (MLA's per-head attn_k_b/attn_v_b)."""
        if not self.wants(name):
            return
        x = self._rows(x, name)
        e = self.stats.entry(name, x.shape[0], x.shape[2])
        for m in range(x.shape[0]):
            self._k.accumulate_rows(e.sums[m], x[m], self._dense_order)
        e.counts[0] += self._dense_order.size  # one count per tensor: rows / n_mat

    def lookup(self, name: str, n_rows: int, ne0: int) -> None:
        """An embedding lookup (``get_rows``, no multiply): every column of a looked-up row weighs the same, so each
        row adds 1 to every column's sum and 1 to the count (value 1.0).  Used for MTP heads' own ``embed_tokens``."""
        if not self.wants(name):
            return
        e = self.stats.entry(name, 1, ne0)
        e.sums[0] += np.float32(n_rows)
        e.counts[0] += n_rows

    def experts(self, name: str, x: np.ndarray, ids: np.ndarray, n_expert: int) -> None:
        """``x`` (rows, 1 or k, ne0) and ``ids`` (rows, k): the input of ``mul_mat_id(name, x, ids)``."""
        if not self.wants(name):
            return
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[0] != self.layout.n_rows:
            raise ValueError(f"{name}: expected ({self.layout.n_rows}, k, ne0) rows, got {x.shape}")
        ids = np.ascontiguousarray(ids, dtype=np.int32)
        if ids.size and (ids.min() < 0 or ids.max() >= n_expert):
            raise ValueError(f"{name}: expert id out of range 0..{n_expert - 1}")
        e = self.stats.entry(name, n_expert, x.shape[2], n_expert)
        self._k.accumulate_experts(e.sums, e.counts, x, ids, self._order, self._bounds)


# -- the model as the forward pass sees it ---------------------------------------------------------------------------
class ModelWeights:
    """A model's tensors as float32 numpy arrays (numpy order: ``(ne1, ne0)``, ``(ne2, ne1, ne0)``) and its metadata.

    F32 tensors are views of the memory map; other types are dequantized with ``qf.dequantize_rows`` on each call.
    """

    def __init__(self, source) -> None:
        from qf.plugins import get_registry

        self.source = source
        self.metadata: dict[str, Any] = source.metadata
        self.arch: str = self.metadata.get("general.architecture", "")
        self._tensors = {t.name: t for t in source.tensors}
        self._registry = get_registry()

    # metadata
    def hparam(self, key: str, default: Any = ...) -> Any:
        """``<arch>.<key>`` from the metadata (``default`` if given, else an error naming the key)."""
        full = f"{self.arch}.{key}"
        if full in self.metadata:
            return self.metadata[full]
        if default is ...:
            raise UsageError(f"model metadata lacks {full}, which the {self.arch} forward pass needs")
        return default

    def per_layer(self, key: str, layer: int, default: Any = ...) -> Any:
        """A hyper-parameter that may be one value or an array with one value per layer."""
        value = self.hparam(key, default)
        if isinstance(value, (list, np.ndarray)):
            return value[layer]
        return value

    # tensors
    def has(self, name: str) -> bool:
        return name in self._tensors

    def shape(self, name: str) -> tuple[int, ...]:
        return self._info(name).shape

    def _info(self, name: str):
        try:
            return self._tensors[name]
        except KeyError:
            raise UsageError(f"model has no tensor {name!r}") from None

    def _decode(self, t, raw: np.ndarray) -> np.ndarray:
        if t.type_id == 0:  # F32
            return raw.view(np.float32).reshape(raw.shape[0], -1)
        from qf.api import dequantize_rows

        qtype = self._registry.quant_type_by_id(t.type_id)
        if qtype is None:
            raise UsageError(f"tensor {t.name!r} has type id {t.type_id}, which no plugin can dequantize")
        return dequantize_rows(qtype, raw, t.n_per_row)

    def get(self, name: str) -> np.ndarray:
        t = self._info(name)
        raw = self.source.rows(t, 0, t.n_rows)
        return self._decode(t, raw).reshape(t.shape[::-1])

    def get_opt(self, name: str) -> np.ndarray | None:
        return self.get(name) if self.has(name) else None

    def matrix(self, name: str, index: int) -> np.ndarray:
        """Matrix ``index`` of a 3-D tensor (an expert or a head): ``(ne1, ne0)``."""
        t = self._info(name)
        ne1 = t.shape[1]
        raw = self.source.rows(t, index * ne1, (index + 1) * ne1)
        return self._decode(t, raw)

    def rows(self, name: str, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` of a 2-D tensor (an embedding lookup): ``(len(ids), ne0)``."""
        t = self._info(name)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= t.n_rows):
            raise UsageError(f"token id out of range for {name} ({t.n_rows} rows)")
        unique, inverse = np.unique(ids, return_inverse=True)
        all_rows = self.source.rows(t, 0, t.n_rows)
        return self._decode(t, np.ascontiguousarray(all_rows[unique]))[inverse]


@attrs.frozen(eq=False)
class HeadInput:
    """What the LM head multiplies: normed hidden rows ``(n_seqs, n_rows, n_embd)`` and the head's tensor name."""

    rows: np.ndarray
    weight: str


class ForwardPass(Protocol):
    """What an architecture's forward factory returns (``Arch.forward = "module:factory"``)."""

    #: vocabulary size (rows of the logits)
    n_vocab: int
    #: the model has an MTP/NextN head the ``mtp`` method can run
    has_mtp: bool

    def trunk(self, tokens: np.ndarray, rec: Recorder, logits_from: int | None,
              keep_hidden: bool) -> tuple[HeadInput | None, np.ndarray | None]:
        """Run ``tokens`` ``(n_seqs, n_tokens)`` (independent sequences, positions from 0) through the model, calling
        ``rec`` before every weight multiply.  Returns the LM head's input for positions ``logits_from..`` (None if
        ``logits_from`` is None) and, with ``keep_hidden``, the hidden states the MTP head takes
        ``(n_seqs, n_tokens, n_embd)``.  The engine multiplies by the head one sequence at a time."""

    def mtp(self, tokens: np.ndarray, hidden: np.ndarray, rec: Recorder,
            logits_from: int | None) -> HeadInput | None:
        """Run the MTP head on ``tokens[:, 1:]`` paired with ``hidden[:, :-1]`` (positions 1..n-1); return its head
        input for MTP rows ``logits_from..``."""

    def finalize(self, stats: ImatrixStats) -> None:
        """Adjust the collected entries after the last batch (e.g. borrowed MLA entries; add a note for each)."""


def supported_arches(registry=None) -> list[str]:
    from qf.plugins import get_registry

    registry = registry or get_registry()
    return sorted(n for a in registry.arches.values() if a.forward for n in a.gguf_names if n != "*")


def load_forward(model: ModelWeights) -> ForwardPass:
    from qf.plugins import get_registry
    from qf.values import load_object

    registry = get_registry()
    arch = registry.arch_for(model.arch) if model.arch else None
    if arch is None or arch.forward is None:
        raise UsageError(f"no forward pass for architecture {model.arch!r}; qf imatrix supports: "
                         f"{', '.join(supported_arches(registry))}")
    return load_object(arch.forward)(model)


# -- the run ---------------------------------------------------------------------------------------------------------
@attrs.frozen
class CollectOptions:
    n_ctx: int = 512
    n_chunks: int | None = None  # None: all
    n_batch: int = 2048
    n_ubatch: int = 512
    mtp: bool = False
    process_output: bool = False
    compute_ppl: bool = True
    #: with BOS, the first token of every chunk is replaced by it (llama-imatrix); None = the vocabulary adds none
    bos_id: int | None = None
    skip_chunks: int = 0


@attrs.define(eq=False)
class Perplexity:
    """llama-imatrix's running perplexity over the second half of every chunk."""

    nll: float = 0.0
    nll2: float = 0.0
    count: int = 0

    def add(self, logits: np.ndarray, targets: np.ndarray) -> None:
        """``logits`` (n, n_vocab) predicting ``targets`` (n,)."""
        from qf_arches.forward import _kernels

        x = np.ascontiguousarray(logits, dtype=np.float32)
        v = np.empty(x.shape[0], np.float64)
        _kernels.negative_log_likelihoods(x, np.ascontiguousarray(targets, dtype=np.int64), v)
        self.add_nll(v)

    def add_nll(self, v: np.ndarray) -> None:
        """Add negative log-likelihoods (float64), as llama-imatrix's ``process_logits`` sums them."""
        self.nll += float(v.sum())
        self.nll2 += float((v * v).sum())
        self.count += int(v.size)

    @property
    def value(self) -> float:
        return math.exp(self.nll / self.count) if self.count else float("nan")

    @property
    def error(self) -> float:
        if self.count < 2:
            return float("nan")
        mean = self.nll / self.count
        var = self.nll2 / self.count - mean * mean
        return math.sqrt(var / (self.count - 1)) * self.value if var > 0 else float("nan")


@attrs.define(eq=False)
class CollectResult:
    stats: ImatrixStats
    ppl: Perplexity
    mtp_ppl: Perplexity | None
    n_chunks: int
    n_tokens: int
    seconds: float
    warnings: list[str] = attrs.field(factory=list)


def chunk_tokens(tokens: np.ndarray, opts: CollectOptions) -> np.ndarray:
    """The chunks llama-imatrix evaluates: ``(n_chunks, n_ctx)``; needs at least two chunks of tokens."""
    tokens = np.asarray(tokens, dtype=np.int32).reshape(-1)
    if opts.skip_chunks:
        if (opts.skip_chunks + 2) * opts.n_ctx >= tokens.size:
            raise UsageError(f"there will be not enough tokens left after skipping {opts.skip_chunks} chunks")
        tokens = tokens[opts.skip_chunks * opts.n_ctx:]
    if tokens.size < 2 * opts.n_ctx:
        raise UsageError(f"the text tokenizes to only {tokens.size} tokens; at least {2 * opts.n_ctx} (two chunks of"
                         f" -c {opts.n_ctx}) are needed")
    n = tokens.size // opts.n_ctx
    if opts.n_chunks is not None and opts.n_chunks > 0:
        n = min(n, opts.n_chunks)
    chunks = tokens[:n * opts.n_ctx].reshape(n, opts.n_ctx).copy()
    if opts.bos_id is not None:
        chunks[:, 0] = opts.bos_id
    return chunks


def collect(model: ModelWeights, tokens: np.ndarray, opts: CollectOptions, stats: ImatrixStats | None = None,
            progress: Callable[[int, int, Perplexity], None] | None = None,
            forward: ForwardPass | None = None) -> CollectResult:
    """Run the chunks through the model's forward pass and accumulate into ``stats`` (a new one if None)."""
    import time

    if opts.n_ctx < 1:
        raise UsageError("-c/--ctx-size must be positive")
    forward = forward or load_forward(model)
    chunks = chunk_tokens(tokens, opts)
    n_seq = max(1, opts.n_batch // opts.n_ctx)
    if not (opts.n_batch < opts.n_ctx or opts.n_batch % opts.n_ctx == 0):
        raise UsageError(f"-b {opts.n_batch} must be smaller than -c {opts.n_ctx} or a multiple of it")
    n_batch = min(opts.n_batch, n_seq * opts.n_ctx)
    stats = stats if stats is not None else ImatrixStats(opts.n_ctx)
    if stats.chunk_size != opts.n_ctx:
        raise UsageError(f"chunk size {stats.chunk_size} of the merged data differs from -c {opts.n_ctx}")
    warnings = []
    run_mtp = opts.mtp and forward.has_mtp
    if opts.mtp and not forward.has_mtp:
        warnings.append(f"--mtp: this {model.arch} model has no MTP/NextN head; collecting the trunk only")
    ppl, mtp_ppl = Perplexity(), (Perplexity() if run_mtp else None)
    first = opts.n_ctx // 2
    want_logits = opts.compute_ppl or opts.process_output
    logits_from = (0 if opts.process_output else first) if want_logits else None
    t0 = time.perf_counter()
    n_chunks = chunks.shape[0]
    if progress is not None:
        progress(0, n_chunks, ppl)
    for i in range(0, n_chunks, n_seq):
        batch = chunks[i:i + n_seq]
        layout = BatchLayout.llama_cpp(batch.shape[0], opts.n_ctx, n_batch, opts.n_ubatch, one_stream=n_seq == 1)
        rec = Recorder(stats, layout, opts.process_output)
        head, hidden = forward.trunk(batch, rec, logits_from, keep_hidden=run_mtp)
        if opts.compute_ppl and head is not None:
            w = model.get(head.weight)
            for s in range(batch.shape[0]):
                rows = head.rows[s, first - logits_from:opts.n_ctx - 1 - logits_from]
                ppl.add(rows @ w.T, batch[s, first + 1:])
            del w
        if run_mtp:
            mtp_layout = BatchLayout.llama_cpp(batch.shape[0], opts.n_ctx - 1, n_batch, opts.n_ubatch,
                                               one_stream=n_seq == 1)
            mtp_from = max(first - 1, 0) if opts.compute_ppl else None
            mtp_head = forward.mtp(batch, hidden, Recorder(stats, mtp_layout), mtp_from)
            if mtp_head is not None and mtp_from is not None:
                # row k (token at position k+1, hidden of position k) predicts the token at position k+2
                w = model.get(mtp_head.weight)
                for s in range(batch.shape[0]):
                    mtp_ppl.add(mtp_head.rows[s, :opts.n_ctx - 2 - mtp_from] @ w.T, batch[s, mtp_from + 2:])
                del w
        del head, hidden
        if progress is not None:
            progress(min(i + n_seq, n_chunks), n_chunks, ppl)
    forward.finalize(stats)
    return CollectResult(stats, ppl, mtp_ppl, n_chunks, n_chunks * opts.n_ctx, time.perf_counter() - t0, warnings)


# -- statistics (llama-imatrix --show-statistics) --------------------------------------------------------------------
@attrs.frozen
class TensorStatistics:
    name: str
    layer: str  # "-" outside blocks
    tensor: str  # short name (attn_q ...)
    total: float  # Σ(Act²) of the per-column means
    minimum: float
    maximum: float
    mean: float
    stddev: float
    active: float  # fraction of columns above 1e-5
    n: int
    entropy: float
    entropy_norm: float  # percent of log2(n)
    zd: float  # fraction of columns with z-score > 1
    cossim: float  # against the same tensor one layer up


def _split_name(name: str) -> tuple[str, str]:
    parts = name.split(".")
    layer = next((parts[i + 1] for i in range(len(parts) - 1) if parts[i] == "blk"), "-")
    tensor = next((parts[i - 1] for i in range(1, len(parts)) if parts[i] == "weight"), name)
    return layer, tensor


def statistics(imatrix: Imatrix) -> tuple[list[TensorStatistics], list[str]]:
    """Per-tensor statistics of the mean squared activations, as llama-imatrix's ``--show-statistics``."""
    out, problems = [], []
    raw = imatrix.sums_and_counts()
    acts: dict[str, np.ndarray] = {}
    for name, (sums, counts) in raw.items():
        keep = counts > 0
        if not keep.any():
            problems.append(f"all counts are zero for tensor {name}, skipping statistics")
            continue
        a = (sums[keep] / counts[keep, None].astype(np.float32)).astype(np.float32).reshape(-1)
        acts[name] = a
        a64 = a.astype(np.float64)
        total = float(a64.sum())
        mean = total / a.size
        var = float((a64 * a64).sum()) / a.size - mean * mean
        dev = math.sqrt(max(0.0, var))
        active = 1.0 - float(np.count_nonzero(np.abs(a) <= 1e-5)) / a.size
        entropy = 0.0
        if total > 0:
            p = a64 / total
            p = p[p > 0]
            entropy = float(-(p * np.log2(p)).sum())
        zd = float(np.count_nonzero((a64 - mean) / dev > 1)) / a.size if dev > 0 else 0.0
        layer, tensor = _split_name(name)
        entropy_norm = 100.0 * entropy / math.log2(a.size) if a.size > 1 else 0.0
        out.append(TensorStatistics(name, layer, tensor, total, float(a.min()), float(a.max()), mean, dev, active,
                                    int(a.size), entropy, entropy_norm, zd, 0.0))
    pattern = re.compile(r"blk\.(\d+)\.")
    final = []
    for ts in out:
        cossim = 0.0
        m = pattern.search(ts.name)
        if m:
            prev = ts.name[:m.start(1)] + str(int(m.group(1)) - 1) + ts.name[m.end(1):]
            if prev in raw and ts.name in raw and raw[prev][0].size == raw[ts.name][0].size:
                cur, old = raw[ts.name][0].astype(np.float64).ravel(), raw[prev][0].astype(np.float64).ravel()
                denom = math.sqrt(float(cur @ cur)) * math.sqrt(float(old @ old))
                cossim = float(cur @ old) / denom if denom > 0 else float("nan")
        final.append(attrs.evolve(ts, cossim=cossim))
    final.sort(key=lambda t: (t.tensor, -t.total))
    return final, problems


def format_statistics(imatrix: Imatrix, label: str) -> list[str]:
    stats, problems = statistics(imatrix)
    lines = [f"Computing statistics for {label} ({len(stats)} tensors)", "",
             f"{'Layer':>5}  {'Tensor':<20}  {'Σ(Act²)':>12}  {'Min':>9}  {'Max':>12}  {'μ':>9}  {'σ':>9}"
             f"  {'% Active':>8}  {'N':>6}  {'Entropy':>9}  {'E (norm)':>8}  {'ZD':>7}  {'CosSim':>7}",
             "=" * 137]
    for t in stats:
        lines.append(f"{t.layer:>5}  {t.tensor:<20}  {t.total:12.2f}  {t.minimum:9.4f}  {t.maximum:12.4f}"
                     f"  {t.mean:9.2f}  {t.stddev:9.2f}  {100 * t.active:7.2f}%  {t.n:6d}  {t.entropy:9.4f}"
                     f"  {t.entropy_norm:7.2f}%  {100 * t.zd:6.2f}%  {t.cossim:7.4f}")
    per_layer: dict[int, list[float]] = {}
    for t in stats:
        if t.layer.isdigit():
            acc = per_layer.setdefault(int(t.layer), [0.0, 0.0, 0.0, 0])
            acc[0] += t.n * t.total
            acc[1] += t.n * t.zd
            acc[2] += t.n * t.cossim
            acc[3] += t.n
    lines += ["", f"Computing weighted average statistics per layer ({len(per_layer)} layers)", "",
              f"{'Layer':>5}  {'μΣ(Act²)':>14}  {'μZD':>9}  {'μCosSim':>8}", "=" * 44]
    for layer in sorted(per_layer):
        b, zd, cs, n = per_layer[layer]
        if n:
            lines.append(f"{layer:5d}  {b / n:14.2f}  {100 * zd / n:8.4f}%  {cs / n:8.4f}")
    lines += [f"warning: {p}" for p in problems]
    return lines


def write_lines(lines: Iterable[str], stream=None) -> None:
    stream = stream or sys.stdout
    for line in lines:
        print(line, file=stream)


__all__ = ["BatchLayout", "CollectOptions", "CollectResult", "Entry", "ForwardPass", "ImatrixStats", "ModelWeights",
           "Perplexity", "Recorder", "chunk_tokens", "collect", "format_statistics", "load_forward", "load_in_files",
           "statistics", "supported_arches", "HeadInput"]
