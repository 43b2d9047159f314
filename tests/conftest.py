"""Shared fixtures: the golden data in ../shared (tests that need it skip, with the reason, when it is absent)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

# test helpers (model factories, the golden-data paths, ctypes access to llama.cpp's C) live in tests/support
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

from paths import GOLDEN, need  # noqa: E402, F401  (re-exported for tests)


@pytest.fixture(scope="session")
def golden_manifest() -> dict:
    return json.loads((need(GOLDEN) / "MANIFEST.json").read_text())


@pytest.fixture(scope="session")
def golden_inputs():
    data = np.load(need(GOLDEN) / "inputs.npz")
    return {name: data[name] for name in data.files}


@pytest.fixture
def tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path
