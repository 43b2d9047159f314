"""llama.cpp's tensor-name conventions the planner and the mix rules rely on (layer numbers, MTP/NextN heads)."""

from __future__ import annotations

import re

#: sscanf(name, "blk.%d.") as llama.cpp reads a layer number
_LAYER = re.compile(r"blk\.([+-]?\d+)")
#: the layer number llama.cpp's remap_layer (--prune-layers) rewrites: std::regex ``blk\.(\d+)\.``
BLOCK_NUMBER = re.compile(r"blk\.(\d+)\.")
#: an MTP/NextN head's tensor: ``blk.<n_layer>.nextn.<part>.weight``
NEXTN = re.compile(r"^blk\.\d+\.nextn\.(?P<part>[a-z_]+)\.weight$")


def layer_of(name: str) -> int:
    """The layer number of a ``blk.N.`` tensor, as llama.cpp's sscanf reads it, or -1."""
    m = _LAYER.match(name)
    return int(m.group(1)) if m else -1


def category(name: str) -> str:
    """llama.cpp's tensor_get_category."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for part, cat in (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_kv_b"),
                      ("attn_v.weight", "attn_v"), ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"),
                      ("attn_output.weight", "attn_output"), ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"),
                      ("ffn_down", "ffn_down")):
        if part in name:
            return cat
    return "other"
