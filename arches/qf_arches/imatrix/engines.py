"""Forward engines for ``qf imatrix`` and how ``--engine`` picks one.

An engine (:class:`qf.ImatrixEngine`, registered from the ``qf_register_imatrix_engines`` hook like any other plugin
kind) runs the model over the chunks and fills an :class:`ImatrixStats`; everything after (GGUF/.dat output,
``--in-file`` merging, statistics) is not its business.  This plugin registers two:

* ``numpy``: qf's own forward passes (``Arch.forward`` of the architecture plugins: llama, qwen2/3, qwen3moe,
  glm4moe with MTP, deepseek2 with MLA), tokenizing with qf's tokenizer;
* ``llama.cpp``: llama.cpp computes the forward pass (``qf_arches.imatrix.llama_cpp``; needs llama-cpp-python), for
  every architecture llama.cpp runs, tokenizing with llama.cpp.  llama.cpp's decode does not run MTP/NextN heads:
  with ``--mtp``, where qf's numpy pass has the model's MTP head, that head runs on llama.cpp's hidden states.

``auto`` takes the engine of lowest ``auto_rank`` that is available and runs the architecture: numpy where qf has a
forward pass, llama.cpp otherwise.  Another distribution adds an engine by registering one (e.g. a GPU pass).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from qf import ImatrixEngine, hookimpl
from qf.errors import QfError, UsageError
from qf.plugins import get_registry

AUTO = "auto"


def _numpy_unavailable() -> str | None:
    return None


def numpy_handles(arch: str) -> bool:
    """qf has a numpy forward pass for ``arch`` (``general.architecture``)."""
    try:
        a = get_registry().arch_for(arch) if arch else None
    except QfError:
        return False
    return a is not None and a.forward is not None and "*" not in a.gguf_names


def llama_cpp_available() -> bool:
    """llama-cpp-python is installed (found without loading its shared libraries)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def llama_cpp_unavailable() -> str | None:
    return None if llama_cpp_available() else ("llama-cpp-python==0.3.36 is not installed: pip install"
                                               " 'qf[llama-cpp]'")


def _llama_cpp_handles(arch: str) -> bool:
    return True  # whatever the bundled llama.cpp loads; it says so when it cannot


@attrs.frozen
class EngineRun:
    """What an engine's runner gets: the model, the text (or token file), the options and the stats to fill."""

    model_path: Any
    source: Any  # the opened TensorSource
    text: bytes | None
    tokens_file: str | None
    parse_special: bool
    opts: Any  # CollectOptions
    stats: Any  # ImatrixStats, filled in place
    progress: Callable
    threads: int | None
    verbose: bool = False


def run_numpy(run: EngineRun):
    """qf's numpy forward pass; text tokenized by qf's tokenizer (by llama.cpp's for --parse-special, or where qf's
    cannot rebuild the model's tokenizer and llama-cpp-python is there)."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from qf_arches.imatrix.collect import ModelWeights, collect, load_forward
    from qf_arches.imatrix.tokenize import chunk_bos, load_token_file, tokenize_text

    weights = ModelWeights(run.source)
    forward = load_forward(weights)
    if run.tokens_file:
        tokens = load_token_file(run.tokens_file, forward.n_vocab)
    elif run.parse_special:
        from qf_arches.imatrix import llama_cpp

        tokens = llama_cpp.tokenize(run.model_path, run.text, parse_special=True)
    else:
        try:
            o = run.opts
            # with --chunks, only the text those chunks (and the skipped ones) need is tokenized
            need = (o.skip_chunks + max(o.n_chunks, 2)) * o.n_ctx + 1 if o.n_chunks else None
            tokens = tokenize_text(weights.metadata, run.text.decode("utf-8", errors="replace"), need)
        except UsageError:
            if llama_cpp_unavailable() is not None:
                raise
            from qf_arches.imatrix import llama_cpp

            tokens = llama_cpp.tokenize(run.model_path, run.text)
    opts = attrs.evolve(run.opts, bos_id=chunk_bos(weights.metadata))
    _quiet_numba_threads()
    with threadpool_limits(limits=run.threads):
        return collect(weights, np.asarray(tokens), opts, run.stats, run.progress, forward)


def _quiet_numba_threads() -> None:
    """numba's parallel kernels here run between BLAS products on the same cores: its ``omp`` threading layer keeps
    idle threads spinning (libgomp), which slows OpenBLAS; ``workqueue`` threads sleep (SmolLM2, 8 chunks, 2 threads:
    12.8 s -> 11.0 s).  Only before the process's first parallel kernel, and unless the user chose a layer."""
    import os

    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"


def run_llama_cpp(run: EngineRun):
    """llama.cpp's forward pass through llama-cpp-python's graph callback."""
    from qf_arches.imatrix.llama_cpp import LlamaCppEngine

    mtp_forward = None
    if run.opts.mtp and numpy_handles(run.source.metadata.get("general.architecture", "")):
        # llama.cpp's trunk, qf's MTP head on its hidden states
        from qf_arches.imatrix.collect import ModelWeights, load_forward

        mtp_forward = load_forward(ModelWeights(run.source))
    with LlamaCppEngine(run.model_path, run.threads, verbose=run.verbose) as llama:
        if run.tokens_file:
            from qf_arches.imatrix.tokenize import load_token_file

            tokens = load_token_file(run.tokens_file, llama.n_vocab)
        else:
            tokens = llama.tokenize(run.text, run.parse_special)
        return llama.collect(tokens, run.opts, run.stats, run.progress, mtp_forward)


NUMPY = ImatrixEngine("numpy", runner=f"{__name__}:run_numpy", available=f"{__name__}:_numpy_unavailable",
                      handles=f"{__name__}:numpy_handles", auto_rank=0, runs_mtp=True,
                      description="qf's own numpy forward passes (MTP/NextN heads, MLA)")
LLAMA_CPP = ImatrixEngine("llama.cpp", runner=f"{__name__}:run_llama_cpp",
                          available=f"{__name__}:llama_cpp_unavailable", handles=f"{__name__}:_llama_cpp_handles",
                          auto_rank=1, description="llama.cpp's forward pass through llama-cpp-python (every"
                                                   " architecture llama.cpp runs)")


@hookimpl
def qf_register_imatrix_engines(registrar):
    registrar.add_imatrix_engine(NUMPY)
    registrar.add_imatrix_engine(LLAMA_CPP)


def choose_engine(requested: str, arch: str, mtp: bool = False) -> tuple[ImatrixEngine, str]:
    """The engine for a model of ``arch`` and why: ``(engine, reason)``.  ``auto`` takes the available engine of
    lowest ``auto_rank`` that runs ``arch`` (with ``mtp``, one that runs MTP/NextN heads before one that does not)."""
    registry = get_registry()
    engines = registry.imatrix_engines
    if requested != AUTO:
        if requested not in engines:
            raise UsageError(f"unknown imatrix engine {requested!r} (known: auto, {', '.join(engines)})")
        engine = engines[requested]
        why_not = engine.why_unavailable()
        if why_not is not None:
            raise UsageError(f"--engine {requested}: not available here ({why_not})")
        if not engine.can_run(arch):
            others = ", ".join(e.name for e in engines.values() if e is not engine and e.can_run(arch))
            raise UsageError(f"--engine {requested}: no forward pass for architecture {arch!r}"
                             + (f"; use --engine {others.split(', ')[0]} or auto" if others else ""))
        return engine, "as asked"
    ranked = registry.auto_imatrix_engines(mtp)
    skipped, missing = [], []
    for engine in ranked:
        if not engine.can_run(arch):
            skipped.append(engine.name)
            continue
        why_not = engine.why_unavailable()
        if why_not is None:
            what = arch or "this model"
            reason = (f"qf has no {' or '.join(skipped)} forward pass for {what}" if skipped
                      else f"qf has a {engine.name} forward pass for {what}")
            if mtp and not engine.runs_mtp:
                reason += "; it does not run MTP/NextN heads"
            return engine, reason
        missing.append(f"{engine.name}: {why_not}")
    from qf_arches.imatrix.collect import supported_arches

    raise UsageError(f"no forward pass for architecture {arch!r}; qf imatrix supports: {', '.join(supported_arches())}"
                     " (numpy engine)" + (f"; {'; '.join(missing)}" if missing else ""))


__all__ = ["AUTO", "LLAMA_CPP", "NUMPY", "EngineRun", "choose_engine", "numpy_handles", "run_llama_cpp", "run_numpy"]
