"""The example plugin, installed as a separate distribution (tox env `example-plugin`): qf must pick it up through
the entry-point group, list it, write it with `qf quantize` and read it back."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import qf
from qf.gguf_io import GGUFFile
from qf.plugins import get_registry
from qf.testing import check_quant_type

try:
    metadata.distribution("qf-toy")
except metadata.PackageNotFoundError:
    pytest.skip("the qf-toy example plugin is not installed (tox -e example-plugin installs it)",
                allow_module_level=True)
HERE = Path(__file__).parent
from model_factory import write_model  # noqa: E402


def qf_cli(*args):
    return subprocess.run([sys.executable, "-m", "qf.app.cli", *args], capture_output=True, text=True)


def test_toy_type_listed():
    result = qf_cli("list-types", "--json")
    assert result.returncode == 0, result.stderr
    toy = [t for t in json.loads(result.stdout) if t["name"] == "TOY8"]
    assert toy and toy[0]["plugin"] == "toy" and toy[0]["id"] == 200
    assert "toy-clip" in toy[0]["strategies"]


def test_toy_plugin_reported():
    result = qf_cli("plugins", "--json")
    plugins = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert plugins["toy"]["distribution"] == "qf-toy"
    assert "qf_register_quant_types" in plugins["toy"]["hooks"]


def test_toy_conforms():
    check_quant_type("TOY8", max_rel_rmse=0.1)  # toy-clip clips 10% off the scale


def test_toy_strategy_with_builtin_type():
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    data = qf.quantize_rows("Q8_0", x, strategy="toy-clip")
    y = qf.dequantize_rows("Q8_0", data, 64)
    assert np.abs(x - y).max() < 0.2 * np.abs(x).max()
    assert not np.array_equal(data, qf.quantize_rows("Q8_0", x))  # it really used the toy strategy


@pytest.mark.parametrize("how", [("TOY8",), ("--tensor-type", "ffn=toy8", "Q8_0")])
def test_quantize_writes_and_reads_back(tmp_path, how):
    src = write_model(tmp_path / "in.gguf")
    out = tmp_path / "out.gguf"
    *opts, ftype = how
    result = qf_cli("quantize", "-q", *opts, str(src), str(out), ftype)
    assert result.returncode == 0, result.stderr
    f = GGUFFile.open(out)  # type id 200 is unknown to gguf: our reader takes its size from the registry
    toy = [t for t in f.tensors if t.type_id == 200]
    assert toy, [(t.name, t.type_id) for t in f.tensors]
    original = GGUFFile.open(src)
    for t in toy:
        x = original.tensor_data(original.tensor(t.name)).view(np.float32).reshape(-1, t.n_per_row)
        y = qf.dequantize_rows("TOY8", f.rows(t, 0, t.n_rows), t.n_per_row)
        assert np.abs(x - y).max() <= np.abs(x).max() / 100
    assert get_registry().quant_type("TOY8").plugin == "toy"


def test_third_party_arch_rules(tmp_path):
    result = qf_cli("list-arches", "--json")
    assert any(a["name"] == "toyarch" and a["plugin"] == "toy" for a in json.loads(result.stdout))
    from qf.app.pipeline import make_plan

    src = write_model(tmp_path / "toy.gguf", arch="toyarch")
    plan, _ = make_plan(src, "Q4_0")
    types = {e.name: e.dst_label for e in plan.entries}
    assert types["blk.0.ffn_down.weight"] == "q8_0" and types["blk.0.ffn_up.weight"] == "q4_0"
    plan, _ = make_plan(write_model(tmp_path / "llama.gguf"), "Q4_0")
    assert {e.name: e.dst_label for e in plan.entries}["blk.0.ffn_down.weight"] == "q4_0"


def test_toy_type_works_with_builtin_search_strategies():
    """A third-party type that poses a standard problem gets qf's own strategies for free."""
    from qf.testing import relative_rmse

    x = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    errors = {}
    for strategy in ("rtn", "gradient", "exhaustive"):
        y = qf.dequantize_rows("TOY8", qf.quantize_rows("TOY8", x, strategy=strategy), 64)
        errors[strategy] = relative_rmse(x, y)
    assert errors["exhaustive"] <= errors["rtn"] and errors["gradient"] <= errors["rtn"], errors
