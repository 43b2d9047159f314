"""llama-quantize's ftypes (presets) and its mix rules, loaded from llama_cpp.toml."""

from __future__ import annotations

from importlib import resources

from qf import Preset, hookimpl

MIX_NAME = "llama.cpp"


def _load():
    from qf.recipe import parse_toml
    from qf_plugins.presets.mix import Mix

    text = resources.files(__package__).joinpath("llama_cpp.toml").read_text()
    where = "qf_plugins/presets/llama_cpp.toml"
    data = parse_toml(text, where)
    presets = []
    for item in data["ftype"]:
        quantized = item["default"] not in ("F32", "F16", "BF16")
        presets.append(Preset(
            item["name"], item["id"], item["default"], mix=MIX_NAME if quantized else None,
            mix_as=item.get("mix_as"), imatrix_required=item.get("imatrix_required", ()),
            description=item.get("description", "").strip(), only_copy=item.get("only_copy", False),
        ))
    return presets, Mix.from_toml(MIX_NAME, text, where)


@hookimpl
def qf_register_presets(registrar):
    presets, mix = _load()
    registrar.add_mix(mix)
    for preset in presets:
        registrar.add_preset(preset)
