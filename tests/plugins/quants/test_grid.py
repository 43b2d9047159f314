"""The grid types IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S beyond the golden bytes.

* the expanded grids (points, map, neighbour lists) against gguf-py's dequantization grids and a brute-force
  rebuild of ggml's neighbour lists;
* the order of IQ1's sort on ties, against glibc's own ``qsort``;
* bytes against the C library on fuzzed inputs (libggml-base: required in tox -e e2e and CI);
* registering the types builds no grid and imports no numba.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qf
from qf.errors import ImatrixError, InvalidWeightsError
from qf.plugins import get_registry
from qf.testing import kernel_bytes

REPO = Path(__file__).resolve().parents[1]
GRID_TYPES = {"IQ2_XXS": 16, "IQ2_XS": 17, "IQ2_S": 22, "IQ3_XXS": 18, "IQ3_S": 21, "IQ1_S": 19, "IQ1_M": 29}
GGUF_GRID = {"iq2xxs": "IQ2_XXS", "iq2xs": "IQ2_XS", "iq2s": "IQ2_S", "iq3xxs": "IQ3_XXS", "iq3s": "IQ3_S",
             "iq1s": "IQ1_S"}


# ---------------------------------------------------------------------------------------------------------------------
# registration


def test_registered_fields():
    registry = get_registry()
    for name, type_id in GRID_TYPES.items():
        qtype = registry.quant_type(name)
        assert qtype.type_id == type_id
        assert qtype.block_size == 256
        assert qtype.problems == ()  # only ggml's own search: no generic problem
        assert qtype.fallback == "IQ4_NL"
        assert qtype.ggml_name == name.lower()
        assert qtype.requires_imatrix == (name in ("IQ2_XXS", "IQ2_XS", "IQ1_S"))
        assert qtype.quantize_requires_imatrix == (name != "IQ3_S")


def test_registering_builds_no_grid_and_imports_no_numba():
    code = (
        "import sys\n"
        "from qf.plugins import get_registry\n"
        "r = get_registry()\n"
        f"assert all(name in r.quant_types for name in {sorted(GRID_TYPES)!r})\n"
        "r.quant_type('IQ2_XXS').load_codec(); r.quant_type('IQ1_M').load_codec()\n"
        "loaded = [m for m in ('numba', 'qf_plugins.quants._grids', 'qf_plugins.quants._grid_kernels',\n"
        "                      'qf_plugins.quants._iq1_kernels') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_types_that_need_an_imatrix_refuse_without():
    x = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
    for name in ("IQ2_XXS", "IQ2_XS", "IQ1_S"):
        with pytest.raises(ImatrixError):
            qf.quantize_rows(name, x)
        with pytest.raises(ImatrixError):  # the codec itself too (its kernel would otherwise weigh by x²)
            get_registry().quant_type(name).load_codec().quantize_native(x, None)


# ---------------------------------------------------------------------------------------------------------------------
# grid tables


@pytest.mark.parametrize("key", sorted(GGUF_GRID))
def test_grid_points_match_gguf(key):
    gguf_quants = pytest.importorskip("gguf.quants")
    from qf_plugins.quants import _grids

    cls = getattr(gguf_quants, GGUF_GRID[key])
    cls.init_grid()
    theirs = np.asarray(cls.grid, np.float32).reshape(cls.grid_shape)
    t = _grids.tables(key)
    np.testing.assert_array_equal(t.dequant_grid, theirs)
    np.testing.assert_array_equal(t.points, 2 * t.digits + 1)


def _brute_force_list(t, u):
    """ggml's list for digit vector u: grid indices sorted by (distance², index), the nwant nearest distances."""
    spec = t.spec
    pos = 2 * ((u >> (spec.bits * np.arange(spec.dim))) & ((1 << spec.bits) - 1)) + 1
    d2 = ((t.points.astype(np.int64) - pos) ** 2).sum(axis=1)
    order = np.lexsort((np.arange(d2.size), d2))
    kept = np.unique(d2)[: spec.nwant]
    return order[np.isin(d2[order], kept)]


@pytest.mark.parametrize("key", ["iq2xxs", "iq2xs", "iq2s", "iq1s", "iq3xxs", "iq3s"])
def test_map_and_neighbour_lists(key):
    from qf_plugins.quants import _grids

    t = _grids.tables(key)
    spec = t.spec
    codes = (t.digits.astype(np.int64) << (spec.bits * np.arange(spec.dim))).sum(axis=1)
    np.testing.assert_array_equal(codes, t.codes)
    np.testing.assert_array_equal(t.map[codes], np.arange(codes.size))
    assert (t.map >= 0).sum() == codes.size
    off_grid = np.flatnonzero(t.map < 0)
    # every list in full for the small IQ3 maps, a sample (and the ends) for the IQ1/IQ2 ones
    if off_grid.size > 3000:
        rng = np.random.default_rng(int(t.codes[0]) + off_grid.size)
        off_grid = np.concatenate([off_grid[:50], rng.choice(off_grid, 1500, replace=False), off_grid[-50:]])
    for u in off_grid:
        off = -int(t.map[u]) - 1
        n = int(t.neighbours[off])
        listed = t.neighbours[off + 1 : off + 1 + n]
        np.testing.assert_array_equal(listed, _brute_force_list(t, int(u)), err_msg=f"u={u}")
    # the lists tile the neighbour array in map order, as ggml lays them out
    offsets = -t.map[t.map < 0].astype(np.int64) - 1
    sizes = t.neighbours[offsets].astype(np.int64) + 1
    np.testing.assert_array_equal(offsets[1:], np.cumsum(sizes)[:-1])
    assert offsets[-1] + sizes[-1] == t.neighbours.size


# ---------------------------------------------------------------------------------------------------------------------
# IQ1's sort


def _glibc_qsort_order(values: np.ndarray) -> np.ndarray | None:
    """The permutation glibc's qsort gives ggml's (value, index) pairs under iq1_sort_helper (compare values only);
    None where the C library is not glibc (others sort differently, and so does llama.cpp built on them)."""
    name = ctypes.util.find_library("c")
    if name is None or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(name)
    cmp_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)

    def compare(a, b):
        x = ctypes.c_float.from_address(a).value
        y = ctypes.c_float.from_address(b).value
        return -1 if x < y else (1 if x > y else 0)

    pairs = np.zeros(values.size, dtype=[("v", np.float32), ("i", np.int32)])
    pairs["v"] = values
    pairs["i"] = np.arange(values.size)
    libc.qsort(pairs.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(values.size), ctypes.c_size_t(8),
               cmp_type(compare))
    return pairs["i"].astype(np.int64)


def _tied_blocks(n_blocks, size, seed):
    rng = np.random.default_rng(seed)
    levels = np.array([-1.5, -0.25, -0.0, 0.0, 0.25, 1.0, 3.0], np.float32)
    x = rng.choice(levels, size=(n_blocks, size)).astype(np.float32)
    x[::3] = np.round(rng.standard_normal(x[::3].shape) * 2).astype(np.float32) * np.float32(0.5)
    x[1] = 0.0
    x[2] = -0.0
    x[4, ::2] = -0.0
    return x


@pytest.mark.parametrize("size", [32, 16])
def test_iq1_sort_keeps_ties_in_order_like_glibc(size):
    from qf_plugins.quants import _iq1_kernels

    x = _tied_blocks(64, size, size)
    ours = np.empty(x.shape, np.int64)
    _iq1_kernels.argsort_rows(x, size, ours)
    np.testing.assert_array_equal(ours, np.argsort(x, axis=1, kind="stable"))
    if _glibc_qsort_order(x[0]) is None:
        pytest.skip("not on glibc: no qsort to compare with")
    for row, block in zip(ours, x, strict=True):
        np.testing.assert_array_equal(row, _glibc_qsort_order(block))


# ---------------------------------------------------------------------------------------------------------------------
# against the C library


@pytest.fixture(scope="module")
def cggml():
    from cggml import require_cggml

    return require_cggml()  # fails where the C library is required (tox -e e2e), skips elsewhere


def _fuzz_inputs(seed):
    rng = np.random.default_rng(seed)
    rows = []
    rows.append(rng.standard_normal((4, 512)) * 0.02)
    rows.append(rng.standard_t(2.5, (4, 512)) * 0.05)
    ties = np.round(rng.standard_normal((4, 512)) * 2) / 4  # few distinct values: IQ1 sort ties everywhere
    rows.append(ties)
    sparse = rng.standard_normal((4, 512)) * (rng.random((4, 512)) < 0.1)
    rows.append(sparse)
    tiny = rng.standard_normal((4, 512)) * np.array([1e-42, 1e-38, 1e-20, 1e-9])[:, None]
    rows.append(tiny)
    edge = np.zeros((4, 512))
    edge[1, 7] = 2e-44
    edge[2, ::5] = -3.0
    edge[3] = np.linspace(-1, 1, 512)
    rows.append(edge)
    x = np.concatenate(rows).astype(np.float32)
    x[0, :256] = -x[0, :256]
    imatrices = [
        rng.lognormal(0.0, 1.0, 512).astype(np.float32),
        np.where(rng.random(512) < 0.2, 0.0, rng.lognormal(0.0, 2.0, 512)).astype(np.float32),
    ]
    return x, imatrices


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", sorted(GRID_TYPES))
def test_fuzz_against_c(cggml, name, seed):
    x, imatrices = _fuzz_inputs(seed)
    qtype = get_registry().quant_type(name)
    cases = [(f"imatrix{i}", im) for i, im in enumerate(imatrices)]
    if not qtype.requires_imatrix:
        cases.insert(0, ("plain", None))
    for label, im in cases:
        ours = kernel_bytes(name, x, im)  # raw bytes: quantize_rows refuses overflowing rows
        theirs = cggml.quantize(GRID_TYPES[name], x, im)
        bad = np.flatnonzero((ours.reshape(-1, qtype.type_size) != theirs.reshape(-1, qtype.type_size)).any(axis=1))
        assert bad.size == 0, f"{name}/{label}: {bad.size} blocks differ, first #{bad[0]}"
        back = qf.dequantize_rows(name, ours, x.shape[1])
        ref = cggml.dequantize(GRID_TYPES[name], theirs, x.shape[1])
        np.testing.assert_array_equal(back.view(np.uint32), ref.view(np.uint32))


def _huge(scale):
    return (np.random.default_rng(5).standard_normal((4, 512)) * scale).astype(np.float32)


@pytest.mark.parametrize("name,scale", [("IQ1_M", 1e37), ("IQ2_XXS", 1e25), ("IQ1_S", 1e20)])
def test_overflowing_values_against_c(cggml, name, scale):
    """float32 overflow inside the search: where ggml still gets through, the bytes agree."""
    x = _huge(scale)
    imatrix = np.random.default_rng(5).lognormal(0.0, 1.0, 512).astype(np.float32)
    np.testing.assert_array_equal(kernel_bytes(name, x, imatrix), cggml.quantize(GRID_TYPES[name], x, imatrix))


@pytest.mark.parametrize("name", ["IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S"])
def test_overflowing_values_raise_where_ggml_aborts(name):
    """Where every neighbour's distance overflows, ggml's GGML_ASSERT aborts the process (checked by hand: the C
    library, run on these rows, dies); qf reports the rows as unquantizable instead."""
    imatrix = np.random.default_rng(5).lognormal(0.0, 1.0, 512).astype(np.float32)
    with pytest.raises(InvalidWeightsError, match="llama.cpp would abort"):
        qf.quantize_rows(name, _huge(1e18), imatrix)


def test_failed_search_reads_no_digit_code_past_the_map(tmp_path):
    """A regression from the C fuzz (a fresh seed crashed the process): huge values under extreme imatrix columns
    make every candidate scale NaN, so IQ2_XXS's digits stay as make_qp_quants wrapped them (255); their code, built
    wide, indexed far past the 65536-entry map (a segfault without bounds checks).  ggml reads the digits as int8
    into a uint16 code, finds it off the grid and aborts: qf raises the same "would abort" error, in a child process
    here, compiled with bounds checks (an out-of-bounds read does not always crash): a crash or an IndexError is a
    failure with its exit status rather than the end of the run."""
    code = (
        "import numpy as np\n"
        "from qf.testing import kernel_bytes\n"
        "from qf.errors import InvalidWeightsError\n"
        "rng = np.random.default_rng(3)\n"
        "x = (rng.standard_normal((1, 256)) * 1e10).astype(np.float32)\n"
        "im = rng.lognormal(0, 1, 256)\n"
        "im[rng.random(256) < 0.05] = 1e30\n"
        "im[rng.random(256) < 0.05] = 1e-30\n"
        "try:\n"
        "    kernel_bytes('IQ2_XXS', x, im.astype(np.float32))\n"
        "except InvalidWeightsError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, f"exit status {done.returncode}: {done.stderr[-2000:]}"
    assert "llama.cpp would abort" in done.stdout


# ---------------------------------------------------------------------------------------------------------------------
# sanity of the result


# relative RMS error of normal data, quantized with a lognormal imatrix (ggml's own reach, with a margin)
RMSE_CEILING = {"IQ1_S": 0.56, "IQ1_M": 0.53, "IQ2_XXS": 0.39, "IQ2_XS": 0.35, "IQ2_S": 0.29, "IQ3_XXS": 0.22,
                "IQ3_S": 0.16}


@pytest.mark.parametrize("name", sorted(GRID_TYPES))
def test_error_is_sane(name):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((8, 1024)) * 0.02).astype(np.float32)
    imatrix = rng.lognormal(0.0, 1.0, 1024).astype(np.float32)
    y = qf.dequantize_rows(name, qf.quantize_rows(name, x, imatrix), x.shape[1])
    rel = float(np.sqrt(np.mean((y - x) ** 2) / np.mean(x**2)))
    assert rel < RMSE_CEILING[name]
