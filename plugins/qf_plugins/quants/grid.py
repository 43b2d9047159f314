"""The 2- and 3-bit grid types: IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S (block layouts in ggml-common.h).

Groups of 8 (IQ2) or 4 (IQ3) magnitudes are snapped to a fixed lattice of allowed vectors; signs and 4-bit sub-block
scales are stored beside them.  Only ggml's own search (the native strategy) produces these types: the lattices are
not a problem the generic strategies solve.  Registering them imports no kernel and builds no grid.
"""

from __future__ import annotations

import contextlib

import numpy as np

from qf import QuantType, hookimpl
from qf.codec import Codec
from qf.errors import ImatrixError, InvalidWeightsError

QK_K = 256

IQ2_XXS = QuantType("IQ2_XXS", 16, QK_K, 66, f"{__name__}:IQ2_XXS_CODEC", requires_imatrix=True,
                    quantize_requires_imatrix=True, fallback="IQ4_NL",
                    description="2.06 bpw: 8-vectors on a 256-point grid, 4-bit scale per 32 (imatrix required)")
IQ2_XS = QuantType("IQ2_XS", 17, QK_K, 74, f"{__name__}:IQ2_XS_CODEC", requires_imatrix=True,
                   quantize_requires_imatrix=True, fallback="IQ4_NL",
                   description="2.31 bpw: 8-vectors on a 512-point grid, 4-bit scale per 16 (imatrix required)")
IQ2_S = QuantType("IQ2_S", 22, QK_K, 82, f"{__name__}:IQ2_S_CODEC", quantize_requires_imatrix=True,
                  fallback="IQ4_NL", description="2.56 bpw: 8-vectors on a 1024-point grid, 4-bit scale per 16")
IQ3_XXS = QuantType("IQ3_XXS", 18, QK_K, 98, f"{__name__}:IQ3_XXS_CODEC", quantize_requires_imatrix=True,
                    fallback="IQ4_NL", description="3.06 bpw: 4-vectors on a 256-point grid, 4-bit scale per 32")
IQ3_S = QuantType("IQ3_S", 21, QK_K, 110, f"{__name__}:IQ3_S_CODEC", fallback="IQ4_NL",
                  description="3.44 bpw: 4-vectors on a 512-point grid, 4-bit scale per 32")
QUANT_TYPES = (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S)


@contextlib.contextmanager
def ggml_asserts(name: str):
    """Report a kernel's stand-in for a GGML_ASSERT (a ValueError) as the user's problem."""
    try:
        yield
    except ValueError as e:
        raise InvalidWeightsError(f"{name}: {e}") from None


class GridCodec(Codec):
    """``grid``: the lattice's name in :mod:`qf_plugins.quants._grids`; the ``quantize_*``/``dequantize_*`` kernels
    in :attr:`kernel_module` are named after the type.  ggml refuses to quantize a type that ``requires_imatrix``
    without one (its search has no weights to fall back on)."""

    kernel_module = "qf_plugins.quants._grid_kernels"

    def __init__(self, qtype: QuantType, grid: str) -> None:
        super().__init__(qtype)
        self.grid = grid
        self.kernel = qtype.name.lower()

    def output(self, x: np.ndarray, imatrix: np.ndarray | None = None) -> np.ndarray:
        if imatrix is None and self.qtype.requires_imatrix:
            raise ImatrixError(f"{self.name} cannot be quantized without an importance matrix")
        return super().output(x)

    def _kernels(self):
        import importlib

        return importlib.import_module(self.kernel_module)

    def _tables(self):
        from qf_plugins.quants import _grids

        return _grids.tables(self.grid)

    def quantize_native(self, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
        out = self.output(x, imatrix)
        t = self._tables()
        quantize = getattr(self._kernels(), f"quantize_{self.kernel}")
        with ggml_asserts(self.name):
            quantize(x, imatrix, t.map, t.neighbours, t.qpoints, t.toff64, t.digits, out)
        return out

    def dequantize(self, data: np.ndarray, n_per_row: int) -> np.ndarray:
        t = self._tables()
        out = np.empty((data.shape[0], n_per_row), np.float32)
        getattr(self._kernels(), f"dequantize_{self.kernel}")(data, t.digits, t.values, out)
        return out


IQ2_XXS_CODEC = GridCodec(IQ2_XXS, "iq2xxs")
IQ2_XS_CODEC = GridCodec(IQ2_XS, "iq2xs")
IQ2_S_CODEC = GridCodec(IQ2_S, "iq2s")
IQ3_XXS_CODEC = GridCodec(IQ3_XXS, "iq3xxs")
IQ3_S_CODEC = GridCodec(IQ3_S, "iq3s")


@hookimpl
def qf_register_quant_types(registrar):
    for qtype in QUANT_TYPES:
        registrar.add_quant_type(qtype)
