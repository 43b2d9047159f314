"""Fixtures for qf_ik's tests: the committed golden file and, when QF_IK_LIB names ik_llama.cpp's libggml, the C
quantizers themselves."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

GOLDEN = HERE / "data" / "ik_golden.npz"


@pytest.fixture(scope="session")
def ik_golden():
    data = np.load(GOLDEN)
    return {name: data[name] for name in data.files}


@pytest.fixture(scope="session")
def ikc():
    from ikc import IKC

    c = IKC.load()
    if c is None:
        if "ik_lib" in os.environ.get("QF_REQUIRE", "").split(","):
            pytest.fail("QF_IK_LIB is not set but QF_REQUIRE names ik_lib (tox -e ik builds it: tests/build_ik_lib.sh)")
        pytest.skip("QF_IK_LIB is not set: no ik_llama.cpp library to compare with (the committed golden file "
                    "still checks every type)")
    return c


@pytest.fixture(scope="session")
def synthetic_llama() -> Path:
    """The synthetic llama model of $QF_SHARED (../shared beside the repository) golden-e2e."""
    shared = Path(os.environ.get("QF_SHARED", HERE.parents[2] / ".." / "shared"))
    path = shared / "golden-e2e" / "synthetic" / "llama" / "synthetic-llama-F32.gguf"
    if not path.exists():
        pytest.skip(f"{path} does not exist ($QF_SHARED)")
    return path
