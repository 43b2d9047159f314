"""`qf quantize --target-size/--target-bpw` on SmolLM2: size within 0.5% and never over, user rules kept,
--save-recipe reproducing the same bytes, --plot."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from paths import GOLDEN_E2E, need
from qf.app.cli import cli
from qf.app.pipeline import make_plan
from qf.plugins import get_registry

IMATRIX = GOLDEN_E2E / "smollm2" / "imatrix" / "imatrix.gguf"
FAST = ["--target-sample-rows", "16"]


@pytest.fixture(scope="module")
def smollm2():
    from llama_ref import need_smollm2

    return need_smollm2()


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_target_size_dry_run_is_within_half_a_percent(smollm2):
    target = 71 * 2**20
    plan, _ = make_plan(smollm2, "Q4_K_M", allow_requantize=True, imatrix=str(need(IMATRIX)), dry_run=True,
                        target_size="71MiB", target_sample_rows=16)
    size = plan.file_bytes(0)
    assert target * 0.995 <= size <= target
    assert plan.target.achieved == size
    assert plan.target.loss > 0
    assert any(e.reason.startswith("--target-size") for e in plan.entries)


def test_target_bpw_counts_tensor_data(smollm2):
    plan, _ = make_plan(smollm2, "Q4_K_M", allow_requantize=True, imatrix=str(need(IMATRIX)), dry_run=True,
                        target_bpw=4.5, target_sample_rows=16)
    bpw = plan.bytes_out * 8 / plan.n_elements
    assert 4.5 * 0.995 <= bpw <= 4.5


def test_user_rules_are_never_overridden_and_types_are_candidates(smollm2):
    plan, _ = make_plan(smollm2, "Q4_K_M", allow_requantize=True, imatrix=str(need(IMATRIX)), dry_run=True,
                        target_size="0.85x", target_sample_rows=16, tensor_types=["attn_v=Q8_0"],
                        target_types="Q4_0,Q5_0,Q8_0")
    for e in plan.entries:
        if "attn_v" in e.name:
            assert e.dst_label == "q8_0" and "--tensor-type" in e.reason
        elif e.reason.startswith("--target-size"):
            assert e.dst.name in ("Q4_0", "Q5_0", "Q8_0")


def test_no_imatrix_means_no_imatrix_types(smollm2):
    plan, _ = make_plan(smollm2, "Q4_K_M", allow_requantize=True, dry_run=True, target_size="0.85x",
                        target_sample_rows=16)
    assert not any(e.dst is not None and e.dst.name.startswith("IQ") and e.dst.name != "IQ4_NL"
                   for e in plan.entries)


def test_impossible_target_is_a_usage_error(smollm2):
    result = CliRunner().invoke(cli, ["quantize", "--dry-run", "--allow-requantize", smollm2, "Q4_K_M",
                                      "--target-size", "1MiB", *FAST])
    assert result.exit_code != 0
    assert "smallest mix" in result.output


def test_save_recipe_reproduces_the_same_bytes(smollm2, tmp_path):
    a, b, recipe, png = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "mix.toml", tmp_path / "mix.png"
    im = need(IMATRIX)
    run("quantize", "-q", "--allow-requantize", "--imatrix", im, smollm2, a, "Q4_K_M", "--target-size", "70MiB",
        "--tensor-type", "ffn_gate=Q5_0", "--save-recipe", recipe, "--plot", png, *FAST)
    assert a.stat().st_size <= 70 * 2**20
    text = recipe.read_text()
    assert "predicted loss" in text and "extends = 'Q4_K_M'" in text
    run("quantize", "-q", "--allow-requantize", "--imatrix", im, smollm2, b, "--recipe", recipe)
    assert a.read_bytes() == b.read_bytes()
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_dry_run_prints_the_prediction(smollm2):
    out = run("quantize", "--dry-run", "--allow-requantize", smollm2, "Q4_0", "--target-bpw", "5", *FAST).output
    assert "predicted loss" in out and "--target-bpw" in out
    assert not os.path.exists("ggml-model-Q4_0.gguf")


def test_slow_candidates_are_measured_only_near_the_choice(smollm2):
    """The grid types (IQ2_*, IQ3_*) are measured in a second stage, only for tensors whose first-stage type lies
    near their bits per weight; with --target-full-search every candidate is measured."""
    from qf.app.target import SLOW_CANDIDATES, STAGE_WINDOW

    def plan_at(**kw):
        return make_plan(smollm2, "Q4_K_M", allow_requantize=True, imatrix=str(need(IMATRIX)), dry_run=True,
                         target_size="0.8x", target_sample_rows=16, **kw)[0]

    every = ",".join(["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "IQ4_NL",
                      "IQ4_XS", *sorted(SLOW_CANDIDATES)])
    full = {c.name: {o.type_name for o in c.options}
            for c in plan_at(target_types=every, target_full_search=True).target.tensors}
    assert any(SLOW_CANDIDATES <= names for names in full.values())  # every candidate is measured
    staged = plan_at(target_types=every)
    reg = get_registry()
    skipped = 0
    for c in staged.target.tensors:
        first = reg.quant_type(c.first_stage).bits_per_weight
        window = {n for n in SLOW_CANDIDATES & full[c.name]
                  if -STAGE_WINDOW[0] <= reg.quant_type(n).bits_per_weight - first <= STAGE_WINDOW[1]}
        assert {o.type_name for o in c.options} & SLOW_CANDIDATES == window, c.name
        assert {o.type_name for o in c.options} - SLOW_CANDIDATES == full[c.name] - SLOW_CANDIDATES, c.name
        skipped += len(SLOW_CANDIDATES & full[c.name]) - len(window)
    assert skipped > 0  # the window left some slow measurements out (how many: benchmarks/bench_target.py times it)


def test_measurements_are_cached_between_runs(smollm2, tmp_path, monkeypatch):
    """A second --target-* run on the same model, imatrix and strategy (another size) measures nothing again and
    chooses as if it had; a changed input (another imatrix) misses the cache; 'off' neither reads nor writes one;
    an unreadable cache file is ignored."""
    import shutil

    import qf.app.target as target

    calls = []
    real = target.measure_errors
    monkeypatch.setattr(target, "measure_errors", lambda *a, **k: calls.append(a[1].name) or real(*a, **k))
    imatrix = shutil.copy(need(IMATRIX), tmp_path / "im.gguf")

    def plan_at(size, cache=str(tmp_path / "cache"), im=imatrix):
        calls.clear()
        plan = make_plan(smollm2, "Q4_K_M", allow_requantize=True, imatrix=str(im), dry_run=True, target_size=size,
                         target_sample_rows=16, target_cache=cache)[0]
        return {e.name: e.dst_label for e in plan.entries}, len(calls)

    uncached, n_off = plan_at("0.8x", cache="off")
    assert n_off > 0 and not (tmp_path / "cache").exists()
    first, n_first = plan_at("0.8x")
    assert first == uncached and n_first == n_off
    files = list((tmp_path / "cache" / "target").glob("*.json"))
    assert len(files) == 1
    again, n_again = plan_at("0.8x")
    assert again == first and n_again == 0
    _, n_other_size = plan_at("0.75x")  # the staged second stage may want a few slow candidates the first skipped
    assert n_other_size < n_first / 4
    files[0].write_text("{not json")
    broken, n_broken = plan_at("0.8x")
    assert broken == first and n_broken == n_first
    other_im = shutil.copy(imatrix, tmp_path / "im2.gguf")
    _, n_other_im = plan_at("0.8x", im=other_im)
    assert n_other_im == n_first


def test_default_sampling_is_capped_by_a_fraction_of_the_rows():
    from qf.app.target import rows_to_sample

    assert rows_to_sample(192, None) == 32 and rows_to_sample(576, None) == 72 and rows_to_sample(49152, None) == 128
    assert rows_to_sample(20, None) == 20 and rows_to_sample(20, 0) == 20 and rows_to_sample(192, 100) == 100
