"""llama-quantize's ftypes as presets: the default type and the ``general.file_type`` value of each."""

from __future__ import annotations

from qf import Preset, hookimpl

# (name, llama_ftype, default quant type)
UNIFORM = (
    ("F32", 0, "F32"),
    ("F16", 1, "F16"),
    ("BF16", 32, "BF16"),
    ("Q4_0", 2, "Q4_0"),
    ("Q4_1", 3, "Q4_1"),
    ("Q5_0", 8, "Q5_0"),
    ("Q5_1", 9, "Q5_1"),
    ("Q8_0", 7, "Q8_0"),
)

PRESETS = tuple(Preset(name, file_type, default) for name, file_type, default in UNIFORM) + (
    Preset("COPY", 0, "F32", only_copy=True, description="copy every tensor as it is"),
)


@hookimpl
def qf_register_presets(registrar):
    for preset in PRESETS:
        registrar.add_preset(preset)
