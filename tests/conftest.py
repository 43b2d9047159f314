"""Shared fixtures: the golden data in ../shared (tests that need it fail in CI, skip locally, when it is absent —
see tests/support/paths.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

# test helpers (model factories, the golden-data paths, ctypes access to llama.cpp's C) live in tests/support
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

from paths import GOLDEN, check_shared_mark, need  # noqa: E402, F401  (re-exported for tests)


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_shared(path): placeholder case of a parametrisation over absent data")


def pytest_report_header(config):
    from fuzz_rows import session_seed

    from paths import required

    needed = ", ".join(sorted(required())) or "nothing (a missing reference skips)"
    return [f"qf: fuzz seed {session_seed()} (QF_FUZZ_SEED reproduces); references required: {needed}"]


def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs_shared"):
        check_shared_mark(mark.args[0])


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
