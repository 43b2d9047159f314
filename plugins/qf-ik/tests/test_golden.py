"""qf_ik's bytes equal ik_llama.cpp's on the committed golden file (no C library needed)."""

from __future__ import annotations

import numpy as np
import pytest

from qf_ik import codecs
from qf_ik.types import implemented, overrides

TYPES = [name for name, _, _ in implemented()] + [attr for *_, attr in overrides()]


def _cases(golden, name):
    prefix = f"out/{name}/"
    return sorted(k[len(prefix):] for k in golden if k.startswith(prefix))


@pytest.mark.parametrize("name", TYPES)
def test_bit_exact_with_ik(ik_golden, name):
    codec = getattr(codecs, name)
    cases = _cases(ik_golden, name)
    assert cases, f"no golden data for {name}: regenerate tests/data/ik_golden.npz (tests/make_golden.py)"
    bad = []
    for case in cases:
        x = ik_golden[f"in/{case}/x"]
        im = ik_golden.get(f"in/{case}/imatrix")
        ref = ik_golden[f"out/{name}/{case}"]
        ours = codec.quantize_native(x, im)
        if ours.shape != ref.shape or not np.array_equal(ours, ref):
            rows = (ours != ref).any(axis=1).sum() if ours.shape == ref.shape else "shape"
            bad.append(f"{case}: {rows} rows differ")
    assert not bad, f"{name}: " + "; ".join(bad)


@pytest.mark.parametrize("name", TYPES)
def test_dequantize_round_trip(ik_golden, name):
    """Decoding ik's bytes and quantizing again is close (a sanity check of the decoders: the exact decoder check
    against C is in test_vs_c)."""
    codec = getattr(codecs, name)
    case = _cases(ik_golden, name)[0]
    x = ik_golden[f"in/{case}/x"]
    y = codec.dequantize(ik_golden[f"out/{name}/{case}"], x.shape[1])
    assert y.shape == x.shape and np.isfinite(y).all()
