"""ik_llama.cpp's ftypes for its own quant types and their mix, loaded from ik_llama_cpp.toml (as qf_plugins'
llama.cpp presets are)."""

from __future__ import annotations

from importlib import resources

from qf import Preset, hookimpl

from qf_ik.types import TARGET

MIX_NAME = "ik_llama.cpp"


def load():
    from qf.recipe import parse_toml
    from qf_plugins.presets.mix import Mix

    text = resources.files(__package__).joinpath("ik_llama_cpp.toml").read_text()
    where = "qf_ik/ik_llama_cpp.toml"
    data = parse_toml(text, where)
    presets = [Preset(item["name"], item["id"], item["default"], mix=MIX_NAME,
                      description=item.get("description", "").strip(), target=TARGET)
               for item in data["ftype"]]
    return presets, Mix.from_toml(MIX_NAME, text, where)


@hookimpl
def qf_register_presets(registrar):
    presets, mix = load()
    registrar.add_mix(mix)
    for preset in presets:
        registrar.add_preset(preset)
