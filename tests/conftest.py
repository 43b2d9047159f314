"""Shared fixtures: the golden data in ../shared (tests that need it skip, with the reason, when it is absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("QF_SHARED", REPO.parent / "shared")).resolve()
GOLDEN = SHARED / "golden"
GOLDEN_E2E = SHARED / "golden-e2e"
ANCHORS = SHARED / "anchors"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared reference data not found: {path} (set QF_SHARED to the folder holding golden/)")
    return path


@pytest.fixture(scope="session")
def golden_manifest() -> dict:
    return json.loads((need(GOLDEN) / "MANIFEST.json").read_text())


@pytest.fixture(scope="session")
def golden_inputs():
    data = np.load(need(GOLDEN) / "inputs.npz")
    return {name: data[name] for name in data.files}


def golden_case(inputs: dict, case: str):
    x = inputs[f"{case}/x"]
    imatrix = inputs.get(f"{case}/imatrix")
    return x, imatrix


@pytest.fixture
def tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path
