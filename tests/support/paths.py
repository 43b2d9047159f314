"""Where the shared reference data lives (../shared next to the repository, or $QF_SHARED)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("QF_SHARED", REPO.parent / "shared")).resolve()
GOLDEN = SHARED / "golden"
GOLDEN_E2E = SHARED / "golden-e2e"
ANCHORS = SHARED / "anchors"
DATA = SHARED / "data"


def need(path: Path) -> Path:
    """Skip the calling test, with the reason, when shared reference data is absent."""
    if not path.exists():
        pytest.skip(f"shared reference data not found: {path} (set QF_SHARED to the folder holding golden/)")
    return path


def golden_case(inputs: dict, case: str):
    return inputs[f"{case}/x"], inputs.get(f"{case}/imatrix")
