"""Strategies: `rtn` is valid, plain round-to-nearest output; `ggml`'s searches beat it where they search."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import qf
from paths import golden_case
from qf.plugins import get_registry
from qf.testing import check_quant_type, kernel_bytes, relative_rmse

# qf's own types (a third-party distribution installed beside qf, e.g. qf-ik, brings its own tests)
QUANTIZED = sorted(n for n, q in get_registry().quant_types.items()
                   if q.is_quantized and q.codec.startswith("qf_plugins."))


def errors(type_name, x, imatrix, strategy):
    """(plain, imatrix-weighted) relative RMSE of a round trip."""
    y = qf.dequantize_rows(type_name, kernel_bytes(type_name, x, imatrix, strategy), x.shape[1])
    with np.errstate(invalid="ignore", over="ignore"):
        return relative_rmse(x, y), relative_rmse(x, y, imatrix)


def poses_sub_blocks(qtype) -> bool:
    """Does the type pose blocks smaller than its own (a super-block type: its packer refines the stored scales)?"""
    x = np.zeros((1, qtype.block_size), np.float32)
    return qtype.load_codec().pose(x, None).x.shape[1] < qtype.block_size


def supported(type_name, strategy):
    return get_registry().strategy(strategy).supports(get_registry().quant_type(type_name))


def llama_cpp_error(type_name, case, golden_inputs) -> float:
    """Relative RMSE of llama.cpp's own output (the golden bytes, decoded) on a golden case."""
    from paths import GOLDEN

    x = golden_inputs[f"{case}/x"]
    y = qf.dequantize_rows(type_name, np.load(GOLDEN / f"{type_name}.npz")[case], x.shape[1])
    with np.errstate(invalid="ignore", over="ignore"):
        return relative_rmse(x, y)


# golden inputs that were dequantized from quantized models (SmolLM2 ships as Q4_1; gemma's rows lie on a K/legacy
# grid): llama.cpp's search can be (nearly) exact there, so ratios to its error mean nothing
ON_A_GRID = ("real_",)
RTN_FACTOR = 1.25  # rtn's error over ggml's, on every synthetic golden case (measured worst: IQ4_XS 1.21)


@pytest.mark.parametrize("type_name", [n for n in QUANTIZED if supported(n, "rtn")])
def test_rtn_is_sane_and_ggml_search_helps(type_name, golden_manifest, golden_inputs):
    qtype = get_registry().quant_type(type_name)
    ratios, synthetic_worst, checked = [], 0.0, 0
    for case in sorted(golden_manifest["cases"], key=lambda c: c.startswith(ON_A_GRID)):  # synthetic cases first
        x, imatrix = golden_case(golden_inputs, case)
        if x.shape[1] % qtype.block_size or (imatrix is None and qtype.requires_imatrix):
            continue
        rtn, rtn_w = errors(type_name, x, imatrix, "rtn")
        ggml, ggml_w = errors(type_name, x, imatrix, "ggml")
        if not np.isfinite(ggml):  # e.g. Q4_1 on values beyond fp16: llama.cpp's own scale overflows too
            continue
        assert np.isfinite(rtn), case
        checked += 1
        if case.startswith(ON_A_GRID):  # no worse than ggml here, or than ggml's worst on the synthetic cases
            bound = max(synthetic_worst, RTN_FACTOR * ggml)
            assert rtn <= bound, f"{case}: rtn error {rtn:.4g} > {bound:.4g} (ggml {ggml:.4g})"
        else:
            synthetic_worst = max(synthetic_worst, ggml)
            assert rtn <= RTN_FACTOR * ggml, f"{case}: rtn error {rtn:.4g} vs ggml {ggml:.4g}"
        if imatrix is not None and not case.startswith("edge") and qtype.uses_imatrix and rtn_w > 0:
            ratios.append(ggml_w / rtn_w)
    assert checked >= 6, f"only {checked} golden cases compared"
    # where ggml searches with importance weights, it wins on average (super-block types excepted: their packing
    # of any generic solution refines the stored scales against the weighted error, which rtn then profits from)
    if ratios and not poses_sub_blocks(qtype):
        assert np.mean(ratios) < 1.0, ratios


# re-quantizing decoded values gives them back exactly (on both the heavy and the gauss golden cases)
_LEGACY = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"}
_SCALE_ONLY = {"MXFP4", "Q1_0", "Q2_0", "TQ1_0", "TQ2_0"}
STABLE = {
    "ggml": _LEGACY | _SCALE_ONLY,
    "rtn": _LEGACY | _SCALE_ONLY | {"IQ4_NL"},
    "gradient": _SCALE_ONLY | {"Q4_0", "Q5_0", "NVFP4"},
    "exhaustive": _LEGACY - {"Q8_0"} | _SCALE_ONLY | {"IQ4_NL"},
}
KIT_MARGIN = 1.02  # over llama.cpp's own error on the same rows (every strategy: measured worst IQ4_NL rtn, 1.009)


@pytest.mark.parametrize("type_name", QUANTIZED)
def test_builtin_types_pass_the_plugin_kit(type_name, golden_inputs):
    """The kit on the golden 'heavy' rows (gaussian, heavy-tailed), bounded by llama.cpp's own error on them: an
    all-zero or half-scaled output fails every type (the ternary types' 0.82 included)."""
    qtype = get_registry().quant_type(type_name)
    case = "heavy_imat" if qtype.requires_imatrix else "heavy"
    x, imatrix = golden_case(golden_inputs, case)
    floor = llama_cpp_error(type_name, case, golden_inputs)
    assert 0.0 < floor < 0.9, floor
    stable = [name for name, types in STABLE.items() if type_name in types]
    check_quant_type(type_name, max_rel_rmse=floor * KIT_MARGIN, x=x, imatrix=imatrix, stable=stable, max_drift=0.5)


def test_the_kit_fails_garbage(monkeypatch):
    """The kit's bounds bite: a codec that decodes to zeros, to 90% of the values, or drifts on re-quantizing."""
    import qf.testing as kit

    x = kit.sample_rows(256)
    real = kit._dequantize
    for broken in (lambda t, d, n: np.zeros_like(real(t, d, n)), lambda t, d, n: real(t, d, n) * np.float32(0.9)):
        monkeypatch.setattr(kit, "_dequantize", broken)
        with pytest.raises(AssertionError, match="relative RMSE"):
            kit.check_round_trip("Q8_0", max_rel_rmse=0.01, x=x)
    monkeypatch.setattr(kit, "_dequantize", real)
    real_q = kit._quantize
    monkeypatch.setattr(kit, "_quantize", lambda t, x, im, s="ggml": real_q(t, x * np.float32(0.97), im, s))
    with pytest.raises(AssertionError, match="re-quantizing"):
        kit.check_round_trip("Q8_0", max_rel_rmse=0.05, x=x, stable=True)
    with pytest.raises(AssertionError, match="loses"):
        kit.check_round_trip("Q8_0", max_rel_rmse=0.05, x=x, max_drift=0.5)


def test_unsupported_pair_is_a_clear_error():
    from qf.errors import UsageError

    grid_like = [n for n in QUANTIZED if not supported(n, "rtn")]
    if not grid_like:
        pytest.skip("every registered type supports rtn")
    with pytest.raises(UsageError, match="does not support"):
        qf.quantize_rows(grid_like[0], np.zeros((1, 256), np.float32), np.ones(256, np.float32), "rtn")


# ---------------------------------------------------------------------------------------------------------------------
# exhaustive and gradient: never worse than llama.cpp, never worse than ik_llama.cpp, on every golden case

SEARCH_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS")


@pytest.fixture(scope="module")
def ik_errors():
    import json

    from paths import ANCHORS, need

    return json.loads(need(ANCHORS / "ik" / "wrmse.json").read_text())


def weighted_error(type_name, strategy, x, imatrix):
    y = qf.dequantize_rows(type_name, kernel_bytes(type_name, x, imatrix, strategy), x.shape[1])
    with np.errstate(invalid="ignore", over="ignore"):
        return relative_rmse(x, y, imatrix)


@pytest.mark.parametrize("strategy", ["exhaustive", "gradient"])
@pytest.mark.parametrize("type_name", SEARCH_TYPES)
def test_search_never_worse_than_ggml_or_ik(type_name, strategy, golden_inputs, ik_errors):
    """Weighted RMSE (w = the case's imatrix, ones without) per golden case vs llama.cpp's and ik_llama.cpp's."""
    worse, ratios = [], []
    for case, ref in ik_errors[type_name].items():
        if not (np.isfinite(ref["ggml"]) and np.isfinite(ref["ik"])):  # values beyond fp16: every tool overflows
            continue
        x, imatrix = golden_case(golden_inputs, case)
        ours = weighted_error(type_name, strategy, x, imatrix)
        bound = min(ref["ggml"], ref["ik"])
        if ours > bound * (1 + 1e-6) + 1e-12:
            worse.append(f"{case}: {ours:.6g} > min(ggml {ref['ggml']:.6g}, ik {ref['ik']:.6g})")
        if ref["ggml"] > 0:
            ratios.append(ours / ref["ggml"])
    assert not worse, "\n".join(worse)
    assert np.mean(ratios) < 1.0, f"{strategy} {type_name}: mean error ratio to ggml {np.mean(ratios):.4f}"


def block_errors(type_name, strategy, x, imatrix):
    """Importance-weighted squared error per block (inf where non-finite)."""
    from qf.codec import importance

    bs = get_registry().quant_type(type_name).block_size
    y = qf.dequantize_rows(type_name, kernel_bytes(type_name, x, imatrix, strategy), x.shape[1])
    with np.errstate(over="ignore", invalid="ignore"):
        e = (importance(x, imatrix) * (x - y.astype(np.float64)) ** 2).reshape(x.shape[0], -1, bs).sum(axis=-1)
    return np.where(np.isfinite(e), e, np.inf)


@pytest.mark.parametrize("type_name", ["Q4_K", "Q2_K", "IQ4_XS", "Q5_1"])
def test_keeps_native_blocks_where_they_fit_better(type_name, golden_inputs):
    """`gradient` and `exhaustive` keep ggml's block where it has the smaller weighted error: per block, never worse."""
    for case in ("edge_imat", "heavy_imat", "gauss"):
        x, imatrix = golden_case(golden_inputs, case)
        ggml = block_errors(type_name, "ggml", x, imatrix)
        for strategy in ("gradient", "exhaustive"):
            assert (block_errors(type_name, strategy, x, imatrix) <= ggml).all(), (case, strategy)


def test_ggml_strategy_error_matches_the_anchor_table(golden_inputs, ik_errors):
    """The anchor table's llama.cpp errors are what qf's byte-identical `ggml` strategy measures."""
    for type_name in SEARCH_TYPES:
        for case, ref in ik_errors[type_name].items():
            if np.isfinite(ref["ggml"]):
                x, imatrix = golden_case(golden_inputs, case)
                assert weighted_error(type_name, "ggml", x, imatrix) == pytest.approx(ref["ggml"], rel=1e-6), case


@pytest.mark.parametrize("strategy", ["exhaustive", "gradient"])
def test_search_output_is_deterministic_and_row_independent(strategy):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6, 512)) * rng.lognormal(size=(6, 1))).astype(np.float32)
    im = rng.lognormal(size=512).astype(np.float32)
    for type_name in ("Q4_1", "Q3_K", "IQ4_XS"):
        full = qf.quantize_rows(type_name, x, im, strategy)
        assert np.array_equal(full, qf.quantize_rows(type_name, x, im, strategy))
        halves = np.vstack([qf.quantize_rows(type_name, x[:3], im, strategy),
                            qf.quantize_rows(type_name, x[3:], im, strategy)])
        assert np.array_equal(full, halves)  # what any split of rows over threads produces


def fit_error(x, w, v):
    """Σw(x − d·v)² at the least-squares d."""
    s2 = (w * v * v).sum()
    return (w * x * x).sum() - ((w * x * v).sum() ** 2 / s2 if s2 > 0 else 0.0)


def test_exhaustive_is_the_optimum_of_the_block_problem():
    """On tiny blocks, brute force over every scale agrees with the breakpoint walk (symmetric and table)."""
    from qf_plugins.strategies import _exhaustive_kernels as k

    rng = np.random.default_rng(11)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    w = rng.lognormal(size=(40, 6)).astype(np.float32)
    d = np.empty(40, np.float32)
    q = np.empty((40, 6), np.int32)
    k.symmetric(x, w, -4, 3, d, q)
    table = np.array([-6.0, -3.0, -1.0, 0.5, 2.0, 5.0], np.float32)
    dt = np.empty(40, np.float32)
    qt = np.empty((40, 6), np.int32)
    k.table(x, w, table, dt, qt)
    for b in range(40):
        xb, wb = x[b].astype(np.float64), w[b].astype(np.float64)
        err = functools.partial(fit_error, xb, wb)
        brute_sym = min(err(np.clip(np.round(xb * t), -4, 3)) for t in np.linspace(-40, 40, 40001))
        brute_tab = min(err(table[np.abs(xb[:, None] * t - table).argmin(axis=1)].astype(np.float64))
                        for t in np.linspace(-40, 40, 40001))
        assert err(q[b].astype(np.float64)) <= brute_sym + 1e-9
        assert err(table[qt[b]].astype(np.float64)) <= brute_tab + 1e-9


def test_exhaustive_block_results_do_not_depend_on_the_walker_schedule():
    """The walkers take blocks as they come free, so which walker runs a block (and beside which other) depends on
    its neighbours; every block must still come out as when solved alone — zero blocks (walks with nothing to
    visit) and blocks of few distinct values included."""
    from qf_plugins.strategies import _exhaustive_kernels as k

    rng = np.random.default_rng(13)
    x = (rng.standard_normal((9, 16)) * rng.lognormal(size=(9, 1))).astype(np.float32)
    x[2] = 0.0
    x[5] = np.round(x[5] * 2) / 2
    x[7, :12] = 0.0
    w = rng.lognormal(size=(9, 16)).astype(np.float32)
    table = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.float32)

    def solve(rows):
        n = len(rows)
        out = [np.empty(n, np.float32) for _ in range(4)] + [np.empty((n, 16), np.int32) for _ in range(3)]
        ds, da, ma, dt, qs, qa, qt = out
        k.symmetric(x[rows], w[rows], -8, 7, ds, qs)
        k.asymmetric(x[rows], w[rows], 15, 0.0, da, ma, qa)
        k.table(x[rows], w[rows], table, dt, qt)
        return out

    together = solve(list(range(9)))
    for b in range(9):
        alone = solve([b])
        for a, t in zip(alone, together):
            assert np.array_equal(a[0], t[b]), b


@pytest.mark.parametrize("table", [[-1.0, 1.0], [-2.0, -0.5, 0.5, 2.0], [-3.0, 0.0, 1.0]])
def test_exhaustive_table_walk_starts_on_the_right_side_of_zero(table):
    """Tables with no entry nearest 0 from both sides (±1, ±0.5): x > 0 starts on the positive entry."""
    from qf_plugins.strategies import _exhaustive_kernels as k

    table = np.array(table, np.float32)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((30, 5)).astype(np.float32)
    w = np.ones_like(x)
    d = np.empty(30, np.float32)
    q = np.empty((30, 5), np.int32)
    k.table(x, w, table, d, q)
    for b in range(30):
        xb = x[b].astype(np.float64)
        err = functools.partial(fit_error, xb, np.ones(5))
        brute = min(err(table[np.abs(xb[:, None] * t - table).argmin(axis=1)].astype(np.float64))
                    for t in np.linspace(-20, 20, 20001))
        assert err(table[q[b]].astype(np.float64)) <= brute + 1e-9


@pytest.mark.parametrize("strategy", ["exhaustive", "gradient"])
def test_unsupported_pair_names_the_strategy(strategy):
    from qf.errors import UsageError

    with pytest.raises(UsageError, match=f"{strategy}.*IQ2_XXS|IQ2_XXS.*{strategy}"):
        qf.quantize_rows("IQ2_XXS", np.zeros((1, 256), np.float32), np.ones(256, np.float32), strategy)


@pytest.mark.parametrize("table", [None, "iq4"])
def test_refinement_scores_candidates_as_the_chosen_one_is_scored(table):
    """group_errors (every candidate (scale, offset) of a group at once) gives each candidate exactly the error
    group_error gives it alone, on groups at any offset, with a zero scale and a value far beyond every scale."""
    from qf_plugins.quants import _refine_kernels as k

    tab = k.NO_TABLE if table is None else np.array(
        [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.float64)
    qlo, qhi = (0, 15) if table is None else (0, 0)
    rng = np.random.default_rng(13)
    x = (rng.standard_normal(96) * 0.02).astype(np.float32)
    x[70] = 3e38
    w = rng.lognormal(size=96).astype(np.float32)
    tmp = k.scratch(32)
    for o in (0, 32, 64):
        a = np.median(np.abs(x[o:o + 32])) / 4 * rng.uniform(0.5, 1.5, 9)
        a[4] = 0.0
        b = rng.uniform(0.0, 0.05, 9) if table is None else np.zeros(9)
        errs = np.full(12, np.nan)
        k.group_errors(x, w, o, 32, a, b, 9, qlo, qhi, tab, errs, tmp)
        for c in range(9):
            q = np.zeros(96, np.int64)
            assert errs[c] == k.group_error(x, w, o, 32, a[c], b[c], qlo, qhi, tab, q), (o, c)
