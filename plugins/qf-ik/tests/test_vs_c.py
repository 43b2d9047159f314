"""qf_ik against ik_llama.cpp's C quantizers on fresh random inputs (runs only when QF_IK_LIB is set)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from cases import random_cases
from qf_ik import codecs
from qf_ik.types import implemented, overrides

TYPES = {name: (type_id, block_size) for name, type_id, block_size in implemented()}
TYPES.update({attr: (type_id, block) for _, type_id, block, attr in overrides()})
SEED = int(os.environ.get("QF_IK_SEED", np.random.SeedSequence().entropy % 2**31))
#: rows per (distribution, imatrix or not) case: 6 distributions x 2 x 48 rows x 2 row lengths = 1152 rows per type
ROWS = int(os.environ.get("QF_IK_ROWS", 48))


@pytest.mark.parametrize("name", list(TYPES))
@pytest.mark.parametrize("n_per_row", [256, 1024])
def test_random_bit_exact(ikc, name, n_per_row):
    type_id, block_size = TYPES[name]
    if n_per_row % block_size:
        pytest.skip("row length does not fit")
    from ikc import CAborted

    codec = getattr(codecs, name)
    bad, aborted, compared = [], [], 0
    for case, x, im in random_cases(SEED + n_per_row, n_per_row, ROWS):
        try:
            ref = ikc.quantize_isolated(type_id, x, im)
        except CAborted:  # ik's own assertion on this input: nothing to compare with (said below)
            aborted.append(case)
            continue
        ours = codec.quantize_native(x, im)
        compared += x.shape[0]
        if not np.array_equal(ref, ours):
            bad.append(f"{case}: {(ref != ours).any(axis=1).sum()} rows")
    where = f"{name} (seed {SEED + n_per_row}, QF_IK_SEED={SEED} reproduces)"
    if aborted:
        warnings.warn(f"{where}: ik's C aborted on case(s) {', '.join(aborted)}; compared the other {compared} rows",
                      stacklevel=1)
    assert not bad, f"{where}: " + "; ".join(bad)
    assert compared >= ROWS * 6, f"{where}: ik's C aborted on most cases ({', '.join(aborted)})"


@pytest.mark.parametrize("name", list(TYPES))
def test_dequantize_equals_c(ikc, name):
    type_id, _ = TYPES[name]
    codec = getattr(codecs, name)
    from ikc import CAborted

    for _, x, im in random_cases(SEED, 512)[:4]:
        try:
            data = ikc.quantize_isolated(type_id, x, im)
        except CAborted:
            continue
        ref = ikc.dequantize(type_id, data, x.shape[1], 4 if name.endswith("_R4") else 1)
        np.testing.assert_array_equal(codec.dequantize(data, x.shape[1]), ref)
