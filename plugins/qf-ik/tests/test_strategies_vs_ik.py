"""qf's searching strategies against ik_llama.cpp's C quantizers (runs only when QF_IK_LIB is set).

For every mainline type that both ``gradient`` and ``exhaustive`` support and ik_llama.cpp has: their per-row
weighted error Σw(x − x̂)² is never worse than ik's result nor than llama.cpp's (qf's ``ggml``), and qf's port of
ik's search (the codec's :meth:`~qf.codec.Codec.alternatives`, reached through qf's registry) writes ik's bytes.
A fresh seed per run (QF_IK_SEED reproduces one)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import qf
from qf import get_registry

SEED = int(os.environ.get("QF_IK_SEED", np.random.SeedSequence().entropy % 2**31))
ROWS = int(os.environ.get("QF_IK_ROWS", 16))
SHARED = Path(os.environ.get("QF_SHARED", Path(__file__).resolve().parents[3] / ".." / "shared"))

# ik_llama.cpp lacks TQ1_0, TQ2_0, Q1_0, Q2_0 and NVFP4 (qf_ik.types.MAINLINE_ONLY)
IK_LACKS = ("TQ1_0", "TQ2_0", "Q1_0", "Q2_0", "NVFP4")
# where ik's search differs from llama.cpp's but qf has no port of it yet (qf_plugins.quants.ik_alternatives):
# the guarantee against ik does not hold by construction there
NOT_PORTED: set[tuple[str, bool]] = set()


def _types():
    reg = get_registry()
    both = [n for n, q in reg.quant_types.items() if q.is_quantized and q.codec.startswith("qf_plugins.")
            and reg.strategy("gradient").supports(q) and reg.strategy("exhaustive").supports(q)]
    return sorted(n for n in both if n not in IK_LACKS)


def _real_rows():
    path = SHARED / "golden" / "inputs.npz"
    if not path.exists():
        return []
    data = np.load(path)
    return [(k.split("/")[0], data[k]) for k in data.files if k.startswith("real_") and k.endswith("/x")
            and "_imat/" not in k]


def cases(seed: int, n_per_row: int, block: int):
    """[(name, x, imatrix or None)]: normal, student-t, sparse outliers and real rows; each without an imatrix and
    with a random positive one."""
    rng = np.random.default_rng(seed)
    sets = [
        ("normal", rng.standard_normal((ROWS, n_per_row)) * 0.02),
        ("student_t", rng.standard_t(2.5, (ROWS, n_per_row)) * 0.01),
    ]
    x = rng.standard_normal((ROWS, n_per_row)) * 0.01
    spikes = rng.random(x.shape) < 0.01
    x[spikes] *= rng.uniform(10, 100, spikes.sum())
    sets.append(("outliers", x))
    for name, real in _real_rows():
        if real.shape[1] % block == 0:
            sets.append((name, real[: ROWS]))
    out = []
    for name, x in sets:
        x = np.ascontiguousarray(x, np.float32)
        out.append((name, x, None))
        out.append((f"{name}_imat", x, rng.lognormal(0.0, 1.5, x.shape[1]).astype(np.float32)))
    return out


def row_errors(type_name, data, x, imatrix):
    y = qf.dequantize_rows(type_name, data, x.shape[1]).astype(np.float64)
    w = np.ones(x.shape[1]) if imatrix is None else imatrix.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        e = (w * (x - y) ** 2).sum(axis=1)
    return np.where(np.isfinite(e), e, np.inf)


@pytest.mark.parametrize("type_name", _types())
def test_search_never_worse_than_ik_or_ggml_and_port_is_ik(ikc, type_name, request):
    from ikc import CAborted

    qtype = get_registry().quant_type(type_name)
    codec = qtype.load_codec()
    seed = SEED + qtype.type_id
    where = f"{type_name} (seed {seed}, QF_IK_SEED={SEED} reproduces)"
    worse, not_ik, unported, compared = [], [], [], 0
    for case, x, im in cases(seed, 512, qtype.block_size):
        try:
            ik = ikc.quantize_isolated(qtype.type_id, x, im)
        except CAborted:
            continue
        for alt in codec.alternatives(x, im):
            compared += x.shape[0]
            if not np.array_equal(alt, ik):
                not_ik.append(f"{case}: {(alt != ik).any(axis=1).sum()} rows differ")
        w = im if qtype.uses_imatrix else None  # a type that ignores the imatrix (Q8_0, MXFP4) minimises plain error
        bounds = {"ik": row_errors(type_name, ik, x, w),
                  "ggml": row_errors(type_name, qf.quantize_rows(type_name, x, im, strategy="ggml"), x, w)}
        for strategy in ("gradient", "exhaustive"):
            ours = row_errors(type_name, qf.quantize_rows(type_name, x, im, strategy=strategy), x, w)
            for ref, bound in bounds.items():
                bad = np.flatnonzero(ours > bound * (1 + 1e-6) + 1e-30)
                if bad.size:
                    r = bad[0]
                    msg = (f"{case} {strategy}: {bad.size} rows worse than {ref}, e.g. row {r}: {ours[r]:.7g} >"
                           f" {bound[r]:.7g}")
                    (unported if ref == "ik" and (type_name, im is not None) in NOT_PORTED else worse).append(msg)
    assert not not_ik, f"{where}: qf's port of ik's search is not ik's bytes: " + "; ".join(not_ik)
    assert not worse, f"{where}:\n" + "\n".join(worse)
    if unported:
        pytest.xfail(f"{where}: ik's search is not ported for this type (yet):\n" + "\n".join(unported))
