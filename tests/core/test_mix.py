"""ftype mixes and per-tensor options: qf's plan chooses llama-quantize's type for every tensor.

Checked against llama-quantize's own --dry-run logs (4 synthetic architectures x every ftype) and against the
per-tensor types and metadata of every golden-e2e run (SmolLM2 and the synthetic models, with and without imatrix,
overrides, pruning, split files, KV overrides).  Planning reads metadata only, so these tests are fast.
"""

from __future__ import annotations

import re

import pytest
from golden_e2e import input_source, kv_summary, manifest_kv_summary, parse_command, quant_cases

from paths import GOLDEN_E2E
from qf.app.pipeline import make_plan
from qf.errors import PlanError, UnknownNameError

ARCHES = ["llama", "qwen3moe", "glm4moe", "deepseek2"]
LINE = re.compile(r"^\[\s*\d+/\s*\d+\]\s+(?P<name>\S+)\s+- \[.*\], type =\s+(?P<src>\S+), size =.*?"
                  r"(?:\((?P<dst>[a-z0-9_A-Z]+)\))?\s*$")


def dry_run_logs():
    for arch in ARCHES:
        folder = GOLDEN_E2E / "synthetic" / arch / "dryrun"
        if not folder.exists():
            continue
        for log in sorted(folder.glob("*.log")):
            yield pytest.param(arch, log.stem, id=f"{arch}-{log.stem}")


def parse_log(text: str) -> list[tuple[str, str]] | None:
    if "missing ftype" in text:
        return None
    return [(m.group("name"), m.group("dst") or m.group("src"))
            for m in map(LINE.match, text.splitlines()) if m]


def plan_types(plan) -> list[tuple[str, str]]:
    return [(e.name, e.dst_label) for e in plan.entries]


@pytest.mark.parametrize("arch,ftype", list(dry_run_logs()))
def test_dry_run_matches_llama_quantize(arch, ftype, monkeypatch):
    folder = GOLDEN_E2E / "synthetic" / arch
    expected = parse_log((folder / "dryrun" / f"{ftype}.log").read_text())
    if "_followed_by_nthreads_" in ftype:
        ftype = "Q4_0"  # llama-quantize took "NVFP4"/"39" as the output name and the thread count 2 as the ftype
    if expected is None:  # llama-quantize refused it (NVFP4 is not in its list): qf accepts NVFP4, refuses "39"
        if ftype.isdigit():
            with pytest.raises(UnknownNameError):
                make_plan(folder / f"synthetic-{arch}-F32.gguf", ftype, dry_run=True)
        return
    plan, _ = make_plan(folder / f"synthetic-{arch}-F32.gguf", ftype, dry_run=True)
    assert plan_types(plan) == expected


def manifest_cases():
    for group in ["smollm2", *(f"synthetic/{a}" for a in ARCHES)]:
        for name, folder, manifest in quant_cases(group):
            yield pytest.param(group, name, folder, manifest, id=f"{group}-{name}")


def plan_from_manifest(group, manifest, monkeypatch):
    opts, pos = parse_command(manifest["command"])
    monkeypatch.chdir(GOLDEN_E2E / manifest["cwd"])
    ftype = pos[2] if len(pos) >= 3 else pos[1]
    source = input_source(group, split=opts.get("keep_split", False))
    plan, _ = make_plan(source.path, ftype, source=source, **opts)
    return plan


@pytest.mark.parametrize("group,name,folder,manifest", list(manifest_cases()))
def test_types_and_metadata_match_golden_e2e(group, name, folder, manifest, monkeypatch):
    if manifest["exit_code"] != 0:
        log = (folder / "quantize.log").read_text()
        missing = re.search(r"Missing importance matrix for tensor (\S+)", log).group(1)
        with pytest.raises(PlanError) as info:
            plan_from_manifest(group, manifest, monkeypatch)
        assert missing in str(info.value)  # qf refuses too, before any work, naming (among others) the same tensor
        return
    plan = plan_from_manifest(group, manifest, monkeypatch)
    assert len(plan.files) == len(manifest["files"])
    for out_file, expected in zip(plan.files, manifest["files"]):
        assert [(e.name, e.dst_label) for e in out_file.entries] == [(t["name"], t["type"])
                                                                     for t in expected["tensors"]]
        assert [e.n_bytes_out for e in out_file.entries] == [t["n_bytes"] for t in expected["tensors"]]
        assert kv_summary(out_file.kvs) == manifest_kv_summary(expected)
