"""qf-toy: a minimal third-party plugin.

* TOY8 (ggml type id 200, unknown to llama.cpp and to the gguf package): blocks of 16 values, an fp16 scale and 16
  signed bytes — 18 bytes per block.
* strategy ``toy-clip``: round to nearest after clipping the scale to 90 % of the block maximum.
* preset ``TOY8``: every quantizable tensor as TOY8.
* architecture ``toyarch``: llama.cpp's rules, except that its ffn_down tensors always get Q8_0.
"""

from __future__ import annotations

import numpy as np

from qf import Arch, BlockProblem, BlockSolution, Preset, QuantType, Strategy, hookimpl
from qf.codec import Codec

BLOCK = 16


class Toy8Codec(Codec):
    def quantize_native(self, x, imatrix):
        blocks = x.reshape(-1, BLOCK)
        d = (np.abs(blocks).max(axis=1) / 127).astype(np.float16)
        q = self._round(blocks, d.astype(np.float32))
        return self._pack(d, q, x.shape[0])

    def pose(self, x, imatrix):
        w = np.ones_like(x) if imatrix is None else np.broadcast_to(imatrix, x.shape).copy()
        return BlockProblem("symmetric", x.reshape(-1, BLOCK), w.reshape(-1, BLOCK), -127, 127)

    def pack(self, x, imatrix, problem, solution):
        d = np.asarray(solution.d, np.float32).astype(np.float16)
        q = self._round(problem.x, d.astype(np.float32))
        return self._pack(d, q, x.shape[0])

    @staticmethod
    def _round(blocks, d):
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(d[:, None] != 0, np.rint(blocks / d[:, None]), 0)
        return np.clip(q, -127, 127).astype(np.int8)

    @staticmethod
    def _pack(d, q, rows):
        out = np.concatenate([d.view(np.uint8).reshape(-1, 2), q.view(np.uint8)], axis=1)
        return out.reshape(rows, -1)

    def dequantize(self, data, n_per_row):
        b = data.reshape(-1, 2 + BLOCK)
        d = b[:, :2].copy().view(np.float16).astype(np.float32)
        q = b[:, 2:].view(np.int8).astype(np.float32)
        return (d * q).reshape(data.shape[0], n_per_row)


def clip(problem: BlockProblem) -> BlockSolution:
    """The ``toy-clip`` strategy's solver for symmetric problems."""
    x = problem.x
    amax = np.abs(x).max(axis=1)
    d = (0.9 * amax / problem.qmax).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d[:, None] > 0, np.rint(x / d[:, None]), 0)
    q = np.clip(q, problem.qmin, problem.qmax).astype(np.int32)
    return BlockSolution(d, q)


TOY8 = QuantType("TOY8", 200, BLOCK, 2 + BLOCK, "qf_toy:TOY8_CODEC", ("symmetric",), uses_imatrix=False,
                 fallback="Q8_0", description="toy 8-bit type from the qf-toy example plugin")
TOY8_CODEC = Toy8Codec(TOY8)


@hookimpl
def qf_register_quant_types(registrar):
    registrar.add_quant_type(TOY8)


@hookimpl
def qf_register_strategies(registrar):
    registrar.add_strategy(Strategy("toy-clip", solvers={"symmetric": "qf_toy:clip"},
                                    description="round to nearest with the scale clipped to 90% (example plugin)"))


@hookimpl
def qf_register_presets(registrar):
    registrar.add_preset(Preset("TOY8", 200, "TOY8", description="every tensor TOY8 (example plugin)"))


TOYARCH = Arch("toyarch", ("toyarch",), rules="""
[[rule]]
role = "ffn_down"
type = "Q8_0"
""", description="toy architecture from the qf-toy example plugin")


@hookimpl
def qf_register_arches(registrar):
    registrar.add_arch(TOYARCH)
