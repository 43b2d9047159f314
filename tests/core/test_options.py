"""The options object: declared once, taken alike from the command line, recipes and the Python API."""

from __future__ import annotations

import attrs
import pytest

from qf.errors import UsageError
from qf.options import QuantizeOptions, recipe_settings, resolve


def test_every_flagged_option_is_a_qf_quantize_flag():
    import click

    from qf.app.cli import quantize

    flags = {flag for param in quantize.params if isinstance(param, click.Option) for flag in param.opts}
    for field in attrs.fields(QuantizeOptions):
        for flag in field.metadata["qf"].flags:
            assert flag in flags, (field.name, flag)


def test_recipe_keys_come_from_the_options():
    assert set(recipe_settings()) >= {"extends", "strategy", "pure", "on_missing_imatrix", "mtp_types", "target"}
    assert recipe_settings()["extends"].name == "ftype"


def test_custom_q_keeps_case_splits_on_commas_and_follows_tensor_type():
    opts = resolve(QuantizeOptions(ftype="Q4_K_M", tensor_types=("ATTN_V=q8_0",),
                                   custom_q=("blk\\.[0-9]\\.ffn_DOWN=iq4_nl,attn_q=q6_K", "output=q8_0")))
    assert [(r.pattern, r.type_name, r.source) for r in opts.rules] == [
        ("attn_v", "q8_0", "--tensor-type"), ("blk\\.[0-9]\\.ffn_DOWN", "iq4_nl", "--custom-q"),
        ("attn_q", "q6_K", "--custom-q"), ("output", "q8_0", "--custom-q")]


@pytest.mark.parametrize("kwargs,needle", [({"pure": "yes"}, "option pure: expected bool"),
                                           ({"prune_layers": "1,2"}, "option prune_layers: expected a list"),
                                           ({"on_missing_imatrix": "maybe"}, "must be one of"),
                                           ({"bogus": 1}, "unknown option(s) bogus")])
def test_api_values_are_checked_like_the_cli(kwargs, needle):
    with pytest.raises(UsageError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        QuantizeOptions.from_kwargs(ftype="Q4_0", **kwargs)


def test_api_takes_tensor_types_as_strings_or_pairs():
    """``tensor_types=[("attn_v", "Q8_0")]`` is the same rule as ``["attn_v=Q8_0"]``; a triple is refused."""
    pairs = resolve(QuantizeOptions.from_kwargs(ftype="Q4_0", tensor_types=[("ATTN_V", "q8_0"), "ffn=Q6_K"]))
    assert [(r.pattern, r.type_name) for r in pairs.rules] == [("attn_v", "q8_0"), ("ffn", "Q6_K")]
    with pytest.raises(UsageError, match="option tensor_types: expected str"):
        QuantizeOptions.from_kwargs(ftype="Q4_0", tensor_types=[("a", "b", "c")])
