"""Helpers for the golden-e2e cases: what llama-quantize was asked, and its inputs as metadata-only sources."""

from __future__ import annotations

import json
import shlex
import struct
from pathlib import Path

from gguf.constants import GGUFValueType as T

from paths import GOLDEN_E2E
from qf.gguf_io import TensorInfo, make_kv

TYPES = {name: getattr(T, name) for name in ("UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32",
                                            "BOOL", "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64")}


def quant_cases(group: str) -> list[tuple[str, Path, dict]]:
    """(case name, case folder, manifest) for every llama-quantize run of a group (smollm2, synthetic/llama ...)."""
    root = GOLDEN_E2E / group / "quant"
    if not root.exists():
        return []
    return [(d.name, d, json.loads((d / "manifest.json").read_text()))
            for d in sorted(root.iterdir()) if (d / "manifest.json").exists()]


def parse_command(command: str) -> tuple[dict, list[str]]:
    """llama-quantize's argv -> (make_plan keyword options, positionals)."""
    argv = shlex.split(command)[1:]
    opts: dict = {"tensor_types": []}
    pos: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--imatrix":
            opts["imatrix"] = next(it)
        elif arg == "--tensor-type":
            opts["tensor_types"].append(next(it))
        elif arg == "--tensor-type-file":
            opts["tensor_type_file"] = next(it)
        elif arg == "--pure":
            opts["pure"] = True
        elif arg == "--keep-split":
            opts["keep_split"] = True
        elif arg == "--leave-output-tensor":
            opts["leave_output_tensor"] = True
        elif arg == "--token-embedding-type":
            opts["token_embedding_type"] = next(it)
        elif arg == "--output-tensor-type":
            opts["output_tensor_type"] = next(it)
        elif arg == "--prune-layers":
            opts["prune_layers"] = tuple(int(x) for x in next(it).split(","))
        elif arg == "--override-kv":
            opts.setdefault("override_kv", []).append(next(it))
        elif arg.startswith("--"):
            raise ValueError(f"unhandled llama-quantize option {arg}")
        else:
            pos.append(arg)
    return opts, pos


def _kv_from_manifest(item: dict):
    vtype = TYPES[item["type"]]
    if vtype != T.ARRAY:
        return make_kv(item["key"], vtype, item["value"])
    # arrays: the manifest keeps the first 8 items and a hash; a placeholder of the right type and length will do
    # for planning (only scalar hparams are read) — KV bytes are compared via array_sha256 instead.
    item_type = TYPES[item["array_item_type"]]
    values = (item["value"] + [item["value"][-1] if item["value"] else 0] * item["array_len"])[: item["array_len"]]
    return make_kv(item["key"], vtype, values, item_type)


class ManifestSource:
    """A model described by a golden-e2e manifest (metadata and tensor infos, no data): enough to plan."""

    def __init__(self, manifest: dict, folder: Path) -> None:
        from qf.plugins import get_registry

        self.files = manifest["files"]
        self.path = folder / self.files[0]["path"]
        self.kvs = [_kv_from_manifest(item) for item in self.files[0]["kv"]]
        self.tensors = []
        for index, f in enumerate(self.files):
            for t in f["tensors"]:
                self.tensors.append(TensorInfo(t["name"], t["type_id"], tuple(t["ne"]), t["abs_offset"],
                                               t["n_bytes"], index))
        self.metadata = {kv.key: kv.value for kv in self.kvs}
        _ = get_registry()


def input_source(group: str, split: bool = False) -> ManifestSource:
    folder = GOLDEN_E2E / group / ("split-input" if split else "")
    return ManifestSource(json.loads((folder / ("manifest.json" if split else "input_manifest.json")).read_text()),
                          folder)


def kv_summary(kvs) -> list[tuple[str, object]]:
    out = []
    for kv in kvs:
        value = kv.value
        if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
            value = ("array", len(value))
        elif isinstance(value, float):
            value = struct.unpack("<f", struct.pack("<f", value))[0]
        out.append((kv.key, value))
    return out


def manifest_kv_summary(file_manifest: dict) -> list[tuple[str, object]]:
    out = []
    for item in file_manifest["kv"]:
        value = ("array", item["array_len"]) if item["type"] == "ARRAY" else item["value"]
        if isinstance(value, float):
            value = struct.unpack("<f", struct.pack("<f", value))[0]
        out.append((item["key"], value))
    return out


