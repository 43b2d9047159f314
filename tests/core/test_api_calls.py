"""qf.api.quantize_checked splits a unit's rows into kernel calls of bounded time (signals are handled between
calls): the bytes and the errors do not depend on the split."""

from __future__ import annotations

import numpy as np
import pytest

import qf
import qf.api
from qf.errors import InvalidWeightsError


@pytest.fixture
def tiny_calls(monkeypatch):
    """Calls of one row each (a call 'takes' longer than CALL_SECONDS)."""
    monkeypatch.setattr(qf.api, "FIRST_CALL_VALUES", 1)
    monkeypatch.setattr(qf.api, "CALL_SECONDS", 0.0)


@pytest.mark.parametrize("type_name,strategy", [("Q4_K", None), ("Q4_1", "exhaustive"), ("IQ4_XS", "gradient")])
def test_split_calls_give_the_same_bytes(type_name, strategy, monkeypatch):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((24, 512)).astype(np.float32)
    imatrix = rng.lognormal(0, 1, 512).astype(np.float32)
    whole = qf.quantize_rows(type_name, x, imatrix, strategy)
    monkeypatch.setattr(qf.api, "FIRST_CALL_VALUES", 512 * 5)  # 5 rows, then one row per call
    monkeypatch.setattr(qf.api, "CALL_SECONDS", 0.0)
    calls = []
    real = qf.api._quantize_call
    monkeypatch.setattr(qf.api, "_quantize_call", lambda *a: calls.append(a[2].shape[0]) or real(*a))
    split = qf.quantize_rows(type_name, x, imatrix, strategy)
    assert calls[0] == 5 and sum(calls) == 24 and len(calls) == 20
    np.testing.assert_array_equal(split, whole)


def test_non_finite_value_is_named_by_its_row_in_the_whole(tiny_calls):
    x = np.ones((10, 64), np.float32)
    x[7, 3] = np.nan
    with pytest.raises(InvalidWeightsError, match="at row 7, column 3") as info:
        qf.quantize_rows("Q8_0", x)
    assert (info.value.row, info.value.column) == (7, 3)
