"""`qf sensitivity` (measured KLD per unit of relative error, qf's numpy forward pass) and how `--target-size` weighs
tensors with it or, by default, with the output-head prior — on the synthetic llama model (untied head)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from paths import DATA, GOLDEN_E2E, need
from qf.app.cli import cli
from qf.app.pipeline import make_plan
from qf.app.target import HEAD_SENSITIVITY, output_head, sensitivity_weights
from qf.errors import UsageError

MODEL = GOLDEN_E2E / "synthetic" / "llama" / "synthetic-llama-F32.gguf"
TARGET = ["--target-sample-rows", "16"]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("sens") / "sens.json"
    result = CliRunner().invoke(cli, ["sensitivity", str(need(MODEL)), "-f", str(need(DATA / "calib_austen_emma.txt")),
                                      "-o", str(out), "--tokens", "48", "--positions", "24"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out, json.loads(out.read_text())


def test_every_matrix_gets_a_finite_sensitivity(measured):
    _, data = measured
    plan, _ = make_plan(str(MODEL), "Q4_0", dry_run=True)
    quantized = {e.name for e in plan.entries if e.dst is not None and e.dst.is_quantized}
    assert quantized <= set(data["weights"])
    for name, w in data["weights"].items():
        assert np.isfinite(w) and w >= 0, name
        # the weight is what was measured: KLD per unit of the probe's relative error
        assert w == pytest.approx(data["kld"][name] / data["error"][name], rel=1e-9), name
        assert 0 < data["error"][name] < 0.1, name  # Q4_0's relative squared error on these weights


def test_the_output_head_is_far_above_the_median_tensor(measured):
    """What the default prior (HEAD_SENSITIVITY) stands for: the head's error reaches the logits directly."""
    _, data = measured
    w = data["weights"]
    head = output_head(w)
    assert head == "output.weight"
    others = [v for k, v in w.items() if k != head]
    assert w[head] > 10 * float(np.median(others))


def test_default_prior_and_file(measured):
    path, data = measured
    names = ["output.weight", "blk.0.attn_q.weight"]
    prior, label = sensitivity_weights(None, names)
    assert prior == {"output.weight": HEAD_SENSITIVITY, "blk.0.attn_q.weight": 1.0} and "prior" in label
    tied, _ = sensitivity_weights(None, ["token_embd.weight"], ["token_embd.weight", "blk.0.attn_q.weight"])
    assert tied == {"token_embd.weight": HEAD_SENSITIVITY}  # no output.weight: the embedding is the head
    untied, _ = sensitivity_weights(None, ["token_embd.weight"], ["token_embd.weight", "output.weight"])
    assert untied == {"token_embd.weight": 1.0}
    from_file, label = sensitivity_weights(str(path), ["output.weight", "blk.99.attn_q.weight"])
    assert from_file["output.weight"] == data["weights"]["output.weight"] and label == str(path)
    # a tensor the file lacks: the median of its kind
    kind = [v for k, v in data["weights"].items() if k.endswith(".attn_q.weight")]
    assert from_file["blk.99.attn_q.weight"] == pytest.approx(float(np.median(kind)))


def test_not_a_sensitivity_file_is_one_line(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"kld": {}}')
    with pytest.raises(UsageError, match="not a qf sensitivity file"):
        sensitivity_weights(str(bad), ["output.weight"])


def _head_bits(plan) -> float:
    e = next(e for e in plan.entries if e.name == "output.weight")
    return e.dst.bits_per_weight if e.dst is not None else 32.0


def test_target_mix_protects_the_head_by_default_and_with_the_file(measured):
    """At a tight size the head keeps more bits than the median tensor, with the prior and with the measurement."""
    path, _ = measured
    for extra in ({}, {"sensitivity": str(path)}):
        plan, _ = make_plan(str(MODEL), "Q4_0", dry_run=True, target_bpw=3.5, target_sample_rows=16, **extra)
        free = [e.dst.bits_per_weight for e in plan.entries if e.reason.startswith("--target-bpw")]
        assert free and _head_bits(plan) > float(np.median(free)), extra
        assert ("prior" in plan.target.sensitivity) == (not extra)
