"""GGUF reading (memory-mapped) and streaming writing."""

from qf.gguf_io.reader import KV, GGUFFile, TensorInfo
from qf.gguf_io.writer import GGUFStreamWriter, OutTensor, atomic_output, make_kv

__all__ = ["KV", "GGUFFile", "TensorInfo", "GGUFStreamWriter", "OutTensor", "atomic_output", "make_kv"]
