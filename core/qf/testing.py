"""A test kit for plugin authors: prove a quant type conforms in a few lines.

    from qf.testing import check_quant_type
    def test_my_type():
        check_quant_type("MY_TYPE", max_rel_rmse=0.2)

Or use it as a pytest plugin (``pytest_plugins = ["qf.testing"]``) for the ``qf_check_type`` fixture.
"""

from __future__ import annotations

import numpy as np

from qf.errors import InvalidWeightsError
from qf.plugins import get_registry


def sample_rows(n_per_row: int, rows: int = 8, seed: int = 0) -> np.ndarray:
    """Gaussian weights with a few outliers, like real tensors."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, n_per_row)) * 0.02).astype(np.float32)
    x.flat[rng.integers(0, x.size, size=max(1, x.size // 97))] *= 8
    return x


def relative_rmse(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> float:
    """sqrt(Σw(x−y)² / Σwx²) with weights broadcast over rows (ones if None)."""
    w = np.ones(x.shape[-1], np.float64) if w is None else np.asarray(w, np.float64)
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    return float(np.sqrt((w * (x - y) ** 2).sum() / max((w * x * x).sum(), 1e-300)))


def kernel_bytes(type_name: str, x: np.ndarray, imatrix: np.ndarray | None = None, strategy: str = "ggml"
                 ) -> np.ndarray:
    """What a type's kernels write for ``x`` — for comparing with a C reference on any input, including rows whose
    result llama.cpp's validation would refuse (values beyond fp16), which :func:`qf.quantize_rows` refuses too."""
    from qf.api import check_imatrix, check_rows, quantize_checked, resolve

    qtype, strat = resolve(type_name, strategy)
    x = check_rows(qtype, x, scan=False)
    return quantize_checked(qtype, strat, x, check_imatrix(imatrix, x.shape[1]))[0]


def check_sizes(type_name: str) -> None:
    """The declared block size / bytes per block agree with what the codec writes."""
    qtype = get_registry().quant_type(type_name)
    n = qtype.block_size * (2 if qtype.block_size > 1 else 64)
    imatrix = np.ones(n, np.float32) if qtype.requires_imatrix else None
    out = _quantize(type_name, sample_rows(n, rows=3), imatrix)
    assert out.dtype == np.uint8
    assert out.shape == (3, n // qtype.block_size * qtype.type_size), (out.shape, qtype)


def check_round_trip(type_name: str, max_rel_rmse: float, strategy: str = "ggml", seed: int = 0) -> float:
    """quantize -> dequantize reproduces the input within ``max_rel_rmse``; re-quantizing the decoded values is
    stable (decoding again gives the same values).  Returns the measured error."""
    qtype = get_registry().quant_type(type_name)
    n = max(qtype.block_size * 4, 256 - 256 % qtype.block_size or qtype.block_size)
    x = sample_rows(n, seed=seed)
    imatrix = np.random.default_rng(seed + 1).lognormal(size=n).astype(np.float32) if qtype.uses_imatrix else None
    data = _quantize(type_name, x, imatrix, strategy)
    y = _dequantize(type_name, data, n)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.isfinite(y).all(), f"{type_name}: decoded values are not finite"
    err = relative_rmse(x, y)
    assert err <= max_rel_rmse, f"{type_name} ({strategy}): relative RMSE {err:.4f} > {max_rel_rmse}"
    again = _dequantize(type_name, _quantize(type_name, y, imatrix, strategy), n)
    assert relative_rmse(y, again) <= max_rel_rmse, f"{type_name}: re-quantizing decoded values drifts"
    return err


def check_rejects_bad_shapes(type_name: str) -> None:
    """Rows whose length is not a multiple of the block size, and non-2-D input, are refused with a clear error."""
    qtype = get_registry().quant_type(type_name)
    bad_lengths = [qtype.block_size + 1] if qtype.block_size > 1 else []
    for n in bad_lengths:
        try:
            _quantize(type_name, np.zeros((2, n), np.float32), None)
        except InvalidWeightsError as exc:
            assert "block size" in str(exc)
        else:
            raise AssertionError(f"{type_name}: a row of {n} values was accepted (block size {qtype.block_size})")
    try:
        _quantize(type_name, np.zeros(qtype.block_size, np.float32), None)
    except InvalidWeightsError:
        pass
    else:
        raise AssertionError(f"{type_name}: 1-D input was accepted")


def check_quant_type(type_name: str, max_rel_rmse: float, strategies: tuple[str, ...] | None = None) -> None:
    """All checks: sizes, round trip for every supporting strategy, bad shapes."""
    registry = get_registry()
    qtype = registry.quant_type(type_name)
    check_sizes(type_name)
    names = strategies or tuple(s.name for s in registry.strategies.values() if s.supports(qtype))
    for name in names:
        check_round_trip(type_name, max_rel_rmse, name)
    check_rejects_bad_shapes(type_name)


def _quantize(type_name, x, imatrix, strategy="ggml"):
    import qf

    qtype = get_registry().quant_type(type_name)
    if imatrix is None and qtype.requires_imatrix:
        imatrix = np.ones(x.shape[-1], np.float32)
    return qf.quantize_rows(type_name, x, imatrix, strategy)


def _dequantize(type_name, data, n):
    import qf

    return qf.dequantize_rows(type_name, data, n)


try:  # optional pytest integration
    import pytest

    @pytest.fixture
    def qf_check_type():
        """``qf_check_type("MY_TYPE", max_rel_rmse=0.1)`` runs :func:`check_quant_type`."""
        return check_quant_type
except ImportError:  # pragma: no cover
    pass
