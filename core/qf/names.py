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
