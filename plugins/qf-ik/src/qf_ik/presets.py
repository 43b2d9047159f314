"""ik_llama.cpp's ftypes for its own quant types (registered from qf_register_presets)."""

from __future__ import annotations
