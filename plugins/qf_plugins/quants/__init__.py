"""Quant-type plugins, one module per family; numba kernels live in the ``_*_kernels`` modules."""
