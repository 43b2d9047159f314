"""Beyond llama-quantize: recipe files, the imatrix policy, MTP/NextN types, fallbacks, rule reports."""

from __future__ import annotations

import numpy as np
import pytest

import qf
from model_factory import llama_tensors, write_model
from paths import GOLDEN_E2E, need
from qf.app.pipeline import make_plan
from qf.errors import PlanError, UsageError
from qf.gguf_io import GGUFFile

GLM = GOLDEN_E2E / "synthetic" / "glm4moe"


def types(plan) -> dict[str, str]:
    return {e.name: e.dst_label for e in plan.entries}


@pytest.fixture
def model(tmp_path):
    return write_model(tmp_path / "m.gguf", shapes=llama_tensors(n_embd=256, n_ff=512, n_kv=256, n_vocab=128))


def test_recipe_rules_strategy_and_imatrix(model, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("""
# keep attention sharp, squeeze the FFN
extends = "Q4_K_M"
token_embedding_type = "Q8_0"

[[rule]]
match = 'blk\\.[0-9]+\\.attn_(q|k)'
type = "Q6_K"

[[rule]]
match = 'ffn_up'
type = "Q4_0"
strategy = "rtn"

[[rule]]
match = 'FFN_GATE'    # case-sensitive: matches nothing
type = "Q2_K"
""")
    plan, _ = make_plan(model, None, recipe=recipe)
    t = types(plan)
    assert t["blk.0.attn_q.weight"] == "q6_K" and t["blk.1.attn_k.weight"] == "q6_K"
    assert t["blk.0.ffn_up.weight"] == "q4_0" and t["token_embd.weight"] == "q8_0"
    assert t["blk.0.ffn_gate.weight"] == "q4_K"  # from the Q4_K_M mix
    entry = next(e for e in plan.entries if e.name == "blk.0.ffn_up.weight")
    assert entry.strategy == "rtn" and "r.toml:10 (rule #2)" in entry.reason
    assert any("FFN_GATE" in w and "matches no tensor" in w for w in plan.warnings)
    assert any(n.startswith("applying override: blk\\.[0-9]+\\.attn_(q|k) -> Q6_K (4 tensors)") for n in plan.notes)
    out = tmp_path / "o.gguf"
    qf.quantize_file(model, out, None, recipe=recipe)
    f_in, f_out = GGUFFile.open(model), GGUFFile.open(out)
    t_in, t_out = f_in.tensor("blk.0.ffn_up.weight"), f_out.tensor("blk.0.ffn_up.weight")
    x = f_in.rows(t_in, 0, t_in.n_rows).view(np.float32)
    np.testing.assert_array_equal(f_out.rows(t_out, 0, t_out.n_rows), qf.quantize_rows("Q4_0", x, strategy="rtn"))


@pytest.mark.parametrize("text,needle", [
    ('extends = "Q4_0"\n[[rule]]\nmatch = "x"\ntype = ', "line 4"),
    ('extends = "Q4_0"\nstrategy = "ggml"\n\n[[rule]]\nmatch = "x"\ntyp = "Q8_0"\n',
     "r.toml:4 (rule #1): unknown key(s) typ"),
    ('extends = "Q4_0"\n[[rule]]\nmatch = "a(b"\ntype = "Q8_0"\n', "invalid regex 'a(b'"),
    ('extend = "Q4_0"\n', "unknown setting 'extend'"),
    ('extends = "Q4_0"\non_missing_imatrix = "maybe"\n', "on_missing_imatrix: must be one of"),
])
def test_recipe_errors(model, tmp_path, text, needle):
    recipe = tmp_path / "r.toml"
    recipe.write_text(text)
    with pytest.raises(UsageError, match=None) as info:
        make_plan(model, None, recipe=recipe)
    assert needle in str(info.value)


def test_missing_imatrix_reported_all_at_once():
    need(GLM)
    with pytest.raises(PlanError) as info:
        make_plan(GLM / "synthetic-glm4moe-F32.gguf", "IQ2_XXS", imatrix=GLM / "imatrix.gguf")
    message = str(info.value)
    for name in ("blk.3.attn_q.weight", "blk.3.ffn_up_exps.weight", "blk.3.nextn.eh_proj.weight"):
        assert name in message
    assert "--on-missing-imatrix" in message


def test_missing_imatrix_upgrade(tmp_path):
    need(GLM)
    plan, _ = make_plan(GLM / "synthetic-glm4moe-F32.gguf", "IQ2_XXS", imatrix=GLM / "imatrix.gguf",
                        on_missing_imatrix="upgrade")
    t = types(plan)
    assert t["blk.3.attn_q.weight"] == "q2_K" and t["blk.3.nextn.eh_proj.weight"] == "q2_K"
    assert t["blk.2.attn_q.weight"] == "iq2_xxs"  # layers with imatrix data keep the ftype's type
    assert any("blk.3.attn_q.weight: IQ2_XXS needs an imatrix; upgraded to Q2_K" in n for n in plan.notes)
    out = tmp_path / "glm.gguf"
    qf.quantize_file(GLM / "synthetic-glm4moe-F32.gguf", out, "IQ2_XXS", imatrix=GLM / "imatrix.gguf",
                     on_missing_imatrix="upgrade")
    assert GGUFFile.open(out).tensor("blk.3.attn_q.weight").type_id == 10


def test_missing_imatrix_dry_run_warns(tmp_path):
    need(GLM)
    plan, _ = make_plan(GLM / "synthetic-glm4moe-F32.gguf", "IQ1_M", dry_run=True)
    assert any("no --imatrix given" in w for w in plan.warnings)


def test_mtp_types():
    need(GLM)
    default, _ = make_plan(GLM / "synthetic-glm4moe-F32.gguf", "Q4_K_M", dry_run=True)
    mtp, _ = make_plan(GLM / "synthetic-glm4moe-F32.gguf", "Q4_K_M", dry_run=True, mtp_types=True)
    assert types(default)["blk.3.nextn.eh_proj.weight"] == "q4_K"
    assert types(mtp)["blk.3.nextn.eh_proj.weight"] == "q6_K"  # like output.weight
    assert types(mtp)["blk.3.nextn.shared_head_head.weight"] == "q6_K"
    assert types(mtp)["blk.3.nextn.embed_tokens.weight"] == "q4_K"  # like (untied) token_embd under Q4_K_M
    others = {k: v for k, v in types(mtp).items() if ".nextn." not in k}
    assert others == {k: v for k, v in types(default).items() if ".nextn." not in k}


def test_fallback_chain_never_throws(tmp_path):
    shapes = {"blk.0.ffn_up.weight": (64, 32), "blk.0.ffn_down.weight": (32, 64), "blk.0.attn_q.weight": (48, 16)}
    src = write_model(tmp_path / "odd.gguf", shapes=shapes)
    plan, _ = make_plan(src, "Q1_0", pure=True)
    t = types(plan)
    assert t == {"blk.0.attn_q.weight": "f16", "blk.0.ffn_down.weight": "q4_0", "blk.0.ffn_up.weight": "q2_0"}
    assert plan.n_fallback == 3
    plan, _ = make_plan(src, "NVFP4", pure=True)
    assert types(plan)["blk.0.ffn_down.weight"] == "mxfp4"
    qf.quantize_file(src, tmp_path / "o.gguf", "Q1_0", pure=True)


def test_prune_out_of_range(model):
    with pytest.raises(UsageError, match=r"--prune-layers: layer\(s\) \[7\] out of range"):
        make_plan(model, "Q4_0", prune_layers=(0, 7))


def test_include_and_exclude_weights_conflict(model, tmp_path):
    with pytest.raises(UsageError, match="cannot be used together"):
        make_plan(model, "Q4_0", include_weights=["a"], exclude_weights=["b"])


def test_tied_embeddings_follow_output_tensor_type(model):
    plan, _ = make_plan(model, "Q4_K_M", output_tensor_type="Q8_0")
    assert types(plan)["token_embd.weight"] == "q8_0"  # tied: token_embd plays output.weight, as in llama.cpp


def test_unsupported_strategy_pair_is_an_error(model):
    with pytest.raises(PlanError, match="strategy 'rtn' does not support IQ3_S"):
        make_plan(model, "Q4_0", tensor_types=["ffn_up=IQ3_S"], strategy="rtn")
