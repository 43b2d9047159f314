"""qf_ik as a plugin: registered through the entry point, conforming to qf's checks."""

from __future__ import annotations

import pytest
from qf.plugins import get_registry
from qf.testing import check_quant_type, check_rejects_bad_shapes, check_round_trip

from qf_ik.types import QUANT_TYPES

# relative RMSE bounds on qf.testing's sample rows (ik's own types at roughly their bits per weight)
MAX_RMSE = {"Q6_0": 0.05, "IQ2_K": 0.35, "IQ3_K": 0.17, "IQ4_K": 0.09, "IQ5_K": 0.045, "IQ6_K": 0.025}


def test_registered_with_ik_ids():
    registry = get_registry()
    for t in QUANT_TYPES:
        got = registry.quant_type(t.name)
        assert got.type_id == t.type_id
        assert got.plugin, "registered through an entry point"


@pytest.mark.parametrize("name", [t.name for t in QUANT_TYPES])
def test_check_quant_type(name):
    base = name.removesuffix("_R4")
    if name.endswith("_R4"):
        # check_sizes quantizes 3 rows, which a 4-row interleave refuses (ik's llama-quantize then writes the base
        # type: a core notion of row groups is needed, see the report); the other checks use 8 rows
        check_round_trip(name, MAX_RMSE[base])
        check_rejects_bad_shapes(name)
    else:
        check_quant_type(name, max_rel_rmse=MAX_RMSE[base])


def test_r4_refuses_partial_row_groups():
    import numpy as np
    from qf.errors import InvalidWeightsError

    from qf_ik import codecs

    with pytest.raises(InvalidWeightsError, match="multiple of 4"):
        codecs.IQ4_K_R4.quantize_native(np.zeros((3, 256), np.float32), None)
