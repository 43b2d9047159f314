"""Strategies: `rtn` is valid, plain round-to-nearest output; `ggml`'s searches beat it where they search."""

from __future__ import annotations

import numpy as np
import pytest

import qf
from paths import golden_case
from qf.plugins import get_registry
from qf.testing import check_quant_type, relative_rmse

QUANTIZED = sorted(n for n, q in get_registry().quant_types.items() if q.is_quantized)


def errors(type_name, x, imatrix, strategy):
    """(plain, imatrix-weighted) relative RMSE of a round trip."""
    y = qf.dequantize_rows(type_name, qf.quantize_rows(type_name, x, imatrix, strategy), x.shape[1])
    with np.errstate(invalid="ignore", over="ignore"):
        return relative_rmse(x, y), relative_rmse(x, y, imatrix)


def supported(type_name, strategy):
    return get_registry().strategy(strategy).supports(get_registry().quant_type(type_name))


@pytest.mark.parametrize("type_name", QUANTIZED)
def test_rtn_is_sane_and_ggml_search_helps(type_name, golden_manifest, golden_inputs):
    if not supported(type_name, "rtn"):
        pytest.skip(f"rtn does not support {type_name}")
    qtype = get_registry().quant_type(type_name)
    ratios = []
    for case in golden_manifest["cases"]:
        x, imatrix = golden_case(golden_inputs, case)
        if x.shape[1] % qtype.block_size or (imatrix is None and qtype.requires_imatrix):
            continue
        rtn, rtn_w = errors(type_name, x, imatrix, "rtn")
        ggml, ggml_w = errors(type_name, x, imatrix, "ggml")
        if not np.isfinite(ggml):  # e.g. Q4_1 on values beyond fp16: llama.cpp's own scale overflows too
            continue
        assert np.isfinite(rtn), case
        # SmolLM2's rows were dequantized from Q4_1, so ggml can be exact there: hence the absolute slack
        assert rtn <= 2 * ggml + 0.05, f"{case}: rtn error {rtn:.4g} vs ggml {ggml:.4g}"
        if imatrix is not None and not case.startswith("edge") and qtype.uses_imatrix and rtn_w > 0:
            ratios.append(ggml_w / rtn_w)
    if ratios:  # where ggml searches with importance weights, it wins on average
        assert np.mean(ratios) < 1.0, ratios


@pytest.mark.parametrize("type_name", QUANTIZED)
def test_builtin_types_pass_the_plugin_kit(type_name):
    qtype = get_registry().quant_type(type_name)
    bpw = qtype.bits_per_weight
    # sanity bounds on gaussian weights with outliers (ternary types are not made for such data: ~0.79)
    bound = 0.95 if bpw < 2.5 else 0.45 if bpw < 3.5 else 0.2 if bpw < 5.25 else 0.1 if bpw < 7 else 0.02
    check_quant_type(type_name, max_rel_rmse=bound)


def test_unsupported_pair_is_a_clear_error():
    from qf.errors import UsageError

    grid_like = [n for n in QUANTIZED if not supported(n, "rtn")]
    if not grid_like:
        pytest.skip("every registered type supports rtn")
    with pytest.raises(UsageError, match="does not support"):
        qf.quantize_rows(grid_like[0], np.zeros((1, 256), np.float32), np.ones(256, np.float32), "rtn")
