"""GGUF reading (memory-mapped, validated) and streaming writing."""

from qf.gguf_io.kv import KV, make_kv
from qf.gguf_io.reader import GGUFFile, SizeLookup, TensorInfo, gguf_sizes
from qf.gguf_io.source import TensorSource, split_path
from qf.gguf_io.writer import GGUFStreamWriter, OutTensor, atomic_output

__all__ = ["KV", "GGUFFile", "GGUFStreamWriter", "OutTensor", "SizeLookup", "TensorInfo", "TensorSource",
           "atomic_output", "gguf_sizes", "make_kv", "split_path"]
