"""Forward engines for ``qf imatrix`` and how ``--engine`` picks one.

An engine runs the model over the chunks and fills an :class:`ImatrixStats`; everything after (GGUF/.dat output,
``--in-file`` merging, statistics) is the engine's business no more.  Two exist:

* ``numpy``: qf's own forward passes (``Arch.forward`` of the architecture plugins: llama, qwen2/3, qwen3moe,
  glm4moe with MTP, deepseek2 with MLA), tokenizing with qf's tokenizer;
* ``llama.cpp``: llama.cpp computes the forward pass (``qf_arches.imatrix.llama_cpp``; needs llama-cpp-python), for
  every architecture llama.cpp runs, tokenizing with llama.cpp.

``auto`` takes numpy where qf has a forward pass for the architecture and llama.cpp otherwise.  The table below is
the registry this module keeps until core has a hook for it (an ``ImatrixEngine`` registered from a
``qf_register_imatrix_engines`` hook, the way architectures are).
"""

from __future__ import annotations

import attrs

from qf.errors import QfError, UsageError

AUTO = "auto"


@attrs.frozen
class EngineInfo:
    name: str
    description: str
    #: "module:attr" of a callable telling whether the engine can run at all here (its dependencies load)
    available: str
    #: "module:attr" of a callable ``(arch) -> bool``: it runs models of this architecture
    handles: str


def _numpy_available() -> bool:
    return True


def numpy_handles(arch: str) -> bool:
    """qf has a numpy forward pass for ``arch`` (``general.architecture``)."""
    from qf.plugins import get_registry

    try:
        a = get_registry().arch_for(arch) if arch else None
    except QfError:
        return False
    return a is not None and a.forward is not None and "*" not in a.gguf_names


def llama_cpp_available() -> bool:
    """llama-cpp-python is installed (found without loading its shared libraries)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def _llama_cpp_handles(arch: str) -> bool:
    return True  # whatever the bundled llama.cpp loads; it says so when it cannot


ENGINES: dict[str, EngineInfo] = {
    "numpy": EngineInfo("numpy", "qf's own numpy forward passes", f"{__name__}:_numpy_available",
                        f"{__name__}:numpy_handles"),
    "llama.cpp": EngineInfo("llama.cpp", "llama.cpp's forward pass through llama-cpp-python",
                            f"{__name__}:llama_cpp_available", f"{__name__}:_llama_cpp_handles"),
}
#: ``auto`` tries these in order
AUTO_ORDER = ("numpy", "llama.cpp")


def _call(ref: str, *args):
    """Call ``"module:attr"`` (looked up on each call, unlike ``qf.values.load_object``'s cache)."""
    import importlib

    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)(*args)


def choose_engine(requested: str, arch: str) -> tuple[str, str]:
    """The engine for a model of ``arch`` and why: ``(name, reason)``."""
    if requested != AUTO:
        info = ENGINES.get(requested)
        if info is None:
            raise UsageError(f"unknown imatrix engine {requested!r} (known: auto, {', '.join(ENGINES)})")
        if not _call(info.available):
            raise UsageError(f"--engine {requested}: not available here (llama-cpp-python=="
                             "0.3.36 is not installed: pip install 'qf[llama-cpp]')")
        if not _call(info.handles, arch):
            from qf_arches.imatrix.collect import supported_arches

            raise UsageError(f"--engine {requested}: no forward pass for architecture {arch!r} (the numpy engine"
                             f" has: {', '.join(supported_arches())}); use --engine llama.cpp or auto")
        return requested, "as asked"
    for name in AUTO_ORDER:
        info = ENGINES[name]
        if _call(info.handles, arch) and _call(info.available):
            reason = (f"qf has a numpy forward pass for {arch}" if name == "numpy"
                      else f"qf has no numpy forward pass for {arch or 'this model'}")
            return name, reason
    from qf_arches.imatrix.collect import supported_arches

    raise UsageError(f"no forward pass for architecture {arch!r}; qf imatrix supports: {', '.join(supported_arches())}"
                     " (numpy engine), and every architecture llama.cpp runs once llama-cpp-python==0.3.36 is"
                     " installed (pip install 'qf[llama-cpp]')")


__all__ = ["AUTO", "AUTO_ORDER", "ENGINES", "EngineInfo", "choose_engine", "numpy_handles"]
