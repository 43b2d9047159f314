"""Importance-matrix loading (GGUF and legacy .dat), lookup and validation."""

from __future__ import annotations

import numpy as np
import pytest

from imatrix_files import write_dat, write_imatrix_gguf
from model_factory import write_model
from paths import GOLDEN_E2E, need
from qf.errors import ImatrixError
from qf.imatrix import Imatrix


def test_gguf_and_dat_agree_on_real_imatrix():
    folder = need(GOLDEN_E2E / "smollm2" / "imatrix")
    g = Imatrix.load(folder / "imatrix.gguf")
    d = Imatrix.load(folder / "imatrix.dat")
    assert not g.is_legacy and d.is_legacy
    assert g.datasets == d.datasets == ["calib_austen_emma.txt"]
    assert g.chunk_count == d.chunk_count == 40
    assert sorted(g.entries) == sorted(d.entries) and len(g.entries) == 210
    for name in g.entries:
        np.testing.assert_array_equal(g.entries[name], d.entries[name])


def test_expert_slices():
    im = Imatrix.load(need(GOLDEN_E2E / "synthetic" / "qwen3moe" / "imatrix.gguf"))
    values = im.lookup("blk.0.ffn_down_exps.weight", "blk.0.ffn_down_exps.weight", 256, 8)
    assert values.shape == (8, 256)
    np.testing.assert_array_equal(values[3], im.entries["blk.0.ffn_down_exps.weight"][3 * 256:4 * 256])


def test_count_zero_gives_ones(tmp_path):
    p = write_imatrix_gguf(tmp_path / "z.gguf", {"a.weight": np.arange(4)}, count=0.0)
    np.testing.assert_array_equal(Imatrix.load(p).entries["a.weight"], np.ones(4, np.float32))


@pytest.mark.parametrize("count", [float("nan"), float("inf"), -2.0])
def test_invalid_count_is_an_error(tmp_path, count):
    """A count llama.cpp would lround into garbage (NaN, inf, negative): one line naming the entry (the long fuzz
    run found NaN counts read as "no data" with a numpy warning)."""
    p = write_imatrix_gguf(tmp_path / "c.gguf", {"a.weight": np.arange(1, 5)}, count=count)
    with pytest.raises(ImatrixError, match=r"'a.weight' has an invalid count"):
        Imatrix.load(p)


def test_gguf_sum_over_count(tmp_path):
    p = write_imatrix_gguf(tmp_path / "s.gguf", {"a.weight": np.array([1, 2, 3, 4], np.float32)}, count=3.0)
    np.testing.assert_array_equal(Imatrix.load(p).entries["a.weight"], np.float32([3, 6, 9, 12]) / np.float32(3))


def test_size_mismatch_is_an_error(tmp_path):
    im = Imatrix.load(write_dat(tmp_path / "a.dat", {"blk.0.attn_q.weight": np.ones(10)}))
    with pytest.raises(ImatrixError, match=r"entry 'blk.0.attn_q.weight' has 10 values but tensor .* needs 64"):
        im.lookup("blk.0.attn_q.weight", "blk.0.attn_q.weight", 64, 1)
    assert im.lookup("blk.0.attn_q.weight", "token_embd.weight", 64, 1) is None  # llama.cpp tolerates token_embd


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rejected(tmp_path, bad):
    values = np.ones(8, np.float32)
    values[5] = bad
    with pytest.raises(ImatrixError, match=r"entry 'x.weight' has a non-finite value .* at index 5"):
        Imatrix.load(write_dat(tmp_path / "n.dat", {"x.weight": values}))
    with pytest.raises(ImatrixError, match="non-finite"):
        Imatrix.load(write_imatrix_gguf(tmp_path / "n.gguf", {"x.weight": values}))


def test_wrong_formats(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(ImatrixError, match="neither GGUF nor a valid legacy .dat"):
        Imatrix.load(junk)
    model = write_model(tmp_path / "model.gguf")
    with pytest.raises(ImatrixError, match=r"no \*.in_sum2 tensors \(general.type = 'model'|general.type"):
        Imatrix.load(model)
    with pytest.raises(ImatrixError, match="missing imatrix metadata"):
        Imatrix.load(write_imatrix_gguf(tmp_path / "nometa.gguf", {"a.weight": np.ones(4)}, metadata=False))
    with pytest.raises(ImatrixError, match="cannot open"):
        Imatrix.load(tmp_path / "absent.dat")


def test_include_exclude():
    im = Imatrix(path=None, entries={"blk.0.attn_q.weight": np.ones(2), "blk.0.ffn_up.weight": np.ones(2)})
    assert list(im.filtered(include=["attn"]).entries) == ["blk.0.attn_q.weight"]
    assert list(im.filtered(exclude=["attn"]).entries) == ["blk.0.ffn_up.weight"]
