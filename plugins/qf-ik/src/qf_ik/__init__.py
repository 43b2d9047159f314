"""qf-ik: ik_llama.cpp's own quant types for qf, as a separately installed plugin distribution.

Registers through the ``qf`` entry-point group (``qf_ik.types``, ``qf_ik.presets``) and uses only qf's public
plugin API (``qf``, ``qf.codec``, ``qf.kernels``, ``qf.testing``).  The bytes reproduce ik_llama.cpp's
``ggml_quantize_chunk`` (commit in REFERENCE.md) bit for bit.
"""

__version__ = "0.1.0"
