"""Alternatives (Codec.alternatives: ik_llama.cpp's own searches for mainline types): strategies that keep native
blocks keep these too, so per block they are never worse than ggml's result nor than ik's (qf's port of it; its
bytes are checked against ik's C library in plugins/qf-ik/tests/test_strategies_vs_ik.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qf
from qf.codec import importance
from qf.plugins import get_registry

# the types whose codecs offer ik's search (with an imatrix; IQ4_NL, IQ4_XS and Q6_K also without one)
WITH_IK = ("Q4_0", "Q5_0", "Q3_K", "Q6_K", "IQ4_NL", "IQ4_XS")
WITHOUT_IMATRIX = ("Q6_K", "IQ4_NL", "IQ4_XS")


def block_errors(type_name, data, x, imatrix):
    bs = get_registry().quant_type(type_name).block_size
    y = qf.dequantize_rows(type_name, data, x.shape[1]).astype(np.float64)
    e = (importance(x, imatrix) * (x - y) ** 2).reshape(x.shape[0], -1, bs).sum(axis=-1)
    return np.where(np.isfinite(e), e, np.inf)


def rows(seed, kind, n, k):
    rng = np.random.default_rng(seed)
    if kind == "normal":
        x = rng.standard_normal((n, k))
    elif kind == "student_t":
        x = rng.standard_t(3, (n, k)) * 0.02
    else:  # sparse outliers
        x = rng.standard_normal((n, k)) * 0.01
        x[rng.random((n, k)) < 0.01] *= 50
    imatrix = (rng.random(k) ** 3 * 10 + 1e-3).astype(np.float32)
    return x.astype(np.float32), imatrix


@pytest.mark.parametrize("type_name", WITH_IK)
def test_codecs_offer_ik_search_where_it_differs(type_name):
    codec = get_registry().quant_type(type_name).load_codec()
    x, imatrix = rows(0, "normal", 2, 256)
    alts = codec.alternatives(x, imatrix)
    assert len(alts) == 1 and alts[0].shape == (2, codec.qtype.row_bytes(256)) and alts[0].dtype == np.uint8
    assert len(codec.alternatives(x, None)) == (type_name in WITHOUT_IMATRIX)
    assert np.isfinite(qf.dequantize_rows(type_name, alts[0], 256)).all()


def test_types_without_ik_search_have_no_alternatives():
    x, imatrix = rows(0, "normal", 1, 256)
    for name in ("Q8_0", "MXFP4", "TQ1_0", "Q1_0"):
        assert get_registry().quant_type(name).load_codec().alternatives(x, imatrix) == []


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(type_name=st.sampled_from(WITH_IK), strategy=st.sampled_from(["gradient", "exhaustive"]),
       kind=st.sampled_from(["normal", "student_t", "sparse"]), seed=st.integers(0, 2**32 - 1),
       weighted=st.booleans())
def test_search_per_block_never_worse_than_ggml_or_ik(type_name, strategy, kind, seed, weighted):
    x, imatrix = rows(seed, kind, 3, 512)
    if not weighted:
        imatrix = None
    codec = get_registry().quant_type(type_name).load_codec()
    ours = block_errors(type_name, qf.quantize_rows(type_name, x, imatrix, strategy=strategy), x, imatrix)
    bounds = [block_errors(type_name, qf.quantize_rows(type_name, x, imatrix, strategy="ggml"), x, imatrix)]
    bounds += [block_errors(type_name, alt, x, imatrix) for alt in codec.alternatives(x, imatrix)]
    for bound in bounds:
        assert (ours <= bound * (1 + 1e-9)).all(), (type_name, strategy, kind, seed, weighted)


def test_ggml_strategy_ignores_alternatives(monkeypatch):
    """The native strategy's bytes are llama.cpp's: it never asks for alternatives."""
    codec = get_registry().quant_type("Q6_K").load_codec()
    x, imatrix = rows(1, "normal", 2, 256)
    before = qf.quantize_rows("Q6_K", x, imatrix)
    monkeypatch.setattr(type(codec), "alternatives", lambda *a: pytest.fail("ggml asked for alternatives"))
    assert (qf.quantize_rows("Q6_K", x, imatrix) == before).all()
