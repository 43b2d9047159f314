"""gguf-py's constants (the GGUF format's value types, magic, alignment, llama.cpp's type ids and sizes) without
importing the rest of gguf-py: ``import gguf`` loads its reader, writer, vocabulary and lazy-tensor code, a third of
a second that every ``qf`` command would pay for four tables.  gguf/constants.py imports only the standard library;
it is loaded on its own and registered as ``gguf.constants``, which ``import gguf`` then reuses."""

from __future__ import annotations

import importlib.util
import sys


def _load():
    if "gguf.constants" in sys.modules:
        return sys.modules["gguf.constants"]
    spec = importlib.util.find_spec("gguf")
    location = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else None
    if location is None:  # pragma: no cover - gguf is a dependency
        raise ImportError("gguf is not installed")
    module_spec = importlib.util.spec_from_file_location("gguf.constants", f"{location}/constants.py")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["gguf.constants"] = module
    module_spec.loader.exec_module(module)
    return module


_constants = _load()
GGUF_MAGIC = _constants.GGUF_MAGIC
GGUF_DEFAULT_ALIGNMENT = _constants.GGUF_DEFAULT_ALIGNMENT
GGUFValueType = _constants.GGUFValueType
GGMLQuantizationType = _constants.GGMLQuantizationType
GGML_QUANT_SIZES = _constants.GGML_QUANT_SIZES
