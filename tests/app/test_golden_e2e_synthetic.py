"""Whole files, byte for byte: every golden-e2e llama-quantize run on the synthetic models (llama, qwen3moe,
glm4moe with MTP, deepseek2 with MLA), re-run with qf from the same input and the same arguments."""

from __future__ import annotations

import hashlib

import pytest
from golden_e2e import parse_command, quant_cases

import qf
from paths import GOLDEN_E2E
from qf.errors import PlanError

ARCHES = ["llama", "qwen3moe", "glm4moe", "deepseek2"]


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cases():
    for arch in ARCHES:
        for name, _folder, manifest in quant_cases(f"synthetic/{arch}"):
            yield pytest.param(arch, name, manifest, id=f"{arch}-{name}")


@pytest.mark.parametrize("arch,name,manifest", list(cases()))
def test_whole_file_identical(arch, name, manifest, tmp_path, monkeypatch):
    opts, pos = parse_command(manifest["command"])
    monkeypatch.chdir(GOLDEN_E2E / manifest["cwd"])
    out = tmp_path / "out.gguf"
    if manifest["exit_code"] != 0:
        with pytest.raises(PlanError, match="Missing|no entry"):
            qf.quantize_file(pos[0], out, pos[2], threads=2, **opts)
        assert not out.exists()
        return
    qf.quantize_file(pos[0], out, pos[2], threads=2, **opts)
    assert sha256(out) == manifest["output_sha256"]
