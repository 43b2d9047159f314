"""Write tests/data/ik_golden.npz: ik_llama.cpp's bytes (through ikc, QF_IK_LIB) for every qf_ik type on the
shared golden inputs (``$QF_SHARED/golden/inputs.npz``, copied in so that the test needs nothing else) and on
fixed random cases.

    QF_IK_LIB=/path/to/libggml.so python plugins/qf-ik/tests/make_golden.py

Layout: ``in/<case>/x``, ``in/<case>/imatrix`` (when the case has one), ``out/<TYPE>/<case>`` (uint8 rows), and
``meta`` (a JSON string: the ik commit, the seeds).  A type's case is absent where the row length does not fit.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import random_cases  # noqa: E402
from ikc import IKC  # noqa: E402

SEEDS = (1234, 5678)
IK_COMMIT = "8337e4cd3861406fc04e0854b1409cd1b027fbc9"


def golden_inputs() -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    shared = Path(os.environ.get("QF_SHARED", HERE.parents[3] / "shared"))
    data = np.load(shared / "golden" / "inputs.npz")
    names = sorted({k.split("/")[0] for k in data.files})
    return [(f"golden_{c}", data[f"{c}/x"], data[f"{c}/imatrix"] if f"{c}/imatrix" in data.files else None)
            for c in names]


def main() -> None:
    from qf_ik.types import implemented, overrides

    c = IKC.load()
    if c is None:
        raise SystemExit("set QF_IK_LIB to ik_llama.cpp's libggml.so")
    cases = golden_inputs()
    for seed in SEEDS:
        cases += [(f"r{seed}_{name}", x, im) for name, x, im in random_cases(seed, 512 if seed == SEEDS[0] else 256)]
    arrays: dict[str, np.ndarray] = {}
    for name, x, im in cases:
        arrays[f"in/{name}/x"] = x
        if im is not None:
            arrays[f"in/{name}/imatrix"] = im
    for tname, type_id, block_size in implemented():
        for name, x, im in cases:
            if x.shape[1] % block_size or (tname.endswith("_R4") and x.shape[0] % 4):
                continue
            arrays[f"out/{tname}/{name}"] = c.quantize(type_id, x, im)
    for _name, type_id, block_size, attr in overrides():  # ik's quantizers for mainline types: golden inputs only
        for name, x, im in cases:
            if name.startswith("golden_") and x.shape[1] % block_size == 0:
                arrays[f"out/{attr}/{name}"] = c.quantize(type_id, x, im)
    arrays["meta"] = np.array(json.dumps({"ik_commit": IK_COMMIT, "seeds": SEEDS}))
    out = HERE / "data" / "ik_golden.npz"
    out.parent.mkdir(exist_ok=True)
    np.savez_compressed(out, **arrays)
    print(out, out.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
