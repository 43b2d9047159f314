"""What qf.quantize_rows returns, llama.cpp's ggml_validate_row_data would accept (llama-quantize validates every
quantized chunk and refuses the model otherwise): finite fp16 scales, and no E8M0 exponent 255 (MXFP4)."""

from __future__ import annotations

import numpy as np
import pytest
from fuzz_rows import exponent_wrap_rows, scale_overflow_rows

import qf
from qf.errors import InvalidWeightsError
from qf.testing import kernel_bytes

# types whose scales overflow (llama.cpp writes inf/NaN and its validation refuses) on the rows below
OVERFLOWING = ["Q4_0", "Q5_0", "Q2_K", "Q4_K", "Q5_K", "IQ4_NL", "IQ4_XS"]


def rows(block: int) -> tuple[np.ndarray, np.ndarray]:
    return scale_overflow_rows(block)  # checked against llama.cpp's C in tests/e2e/test_c_fuzz.py


@pytest.mark.parametrize("type_name", OVERFLOWING)
def test_the_rows_overflow_the_scales(type_name):
    block = qf.get_registry().quant_type(type_name).block_size
    x, imatrix = rows(max(block, 32))
    y = qf.dequantize_rows(type_name, kernel_bytes(type_name, x, imatrix), x.shape[1])
    assert not np.isfinite(y).all()  # llama.cpp's own bytes (kernel_bytes is byte-identical): inf/NaN


@pytest.mark.parametrize("type_name", OVERFLOWING)
def test_overflowing_scales_are_refused(type_name):
    block = qf.get_registry().quant_type(type_name).block_size
    x, imatrix = rows(max(block, 32))
    with pytest.raises(InvalidWeightsError, match="overflow"):
        qf.quantize_rows(type_name, x, imatrix)


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_1", "Q5_1", "Q3_K", "Q6_K"])
def test_what_is_accepted_decodes_finite(type_name):
    block = qf.get_registry().quant_type(type_name).block_size
    x, imatrix = rows(max(block, 32))
    y = qf.dequantize_rows(type_name, qf.quantize_rows(type_name, x, imatrix), x.shape[1])
    assert np.isfinite(y).all()


def tiny_rows() -> np.ndarray:
    return exponent_wrap_rows()  # checked against llama.cpp's C in tests/e2e/test_c_fuzz.py


def test_mxfp4_exponent_wraps_on_tiny_rows():
    e = kernel_bytes("MXFP4", tiny_rows()).reshape(-1, 17)[:, 0]  # llama.cpp's bytes (tests/e2e checks them)
    assert 255 in e.tolist()


def test_mxfp4_wrapped_exponent_is_refused():
    """llama.cpp's validation refuses the exponent 255 ("found invalid e value 255"): so does qf, naming the row."""
    with pytest.raises(InvalidWeightsError, match="E8M0 exponent of 255 .* at row"):
        qf.quantize_rows("MXFP4", tiny_rows())
