"""GGUF reading (memory-mapped, validated) and streaming writing."""

from qf.gguf_io.kv import KV, make_kv
from qf.gguf_io.output import OutputTarget, atomic_output, check_not_inputs, check_space, output_target
from qf.gguf_io.reader import GGUFFile, SizeLookup, TensorInfo, gguf_sizes
from qf.gguf_io.source import TensorSource, split_path
from qf.gguf_io.writer import GGUFStreamWriter, OutTensor

__all__ = ["KV", "GGUFFile", "GGUFStreamWriter", "OutTensor", "OutputTarget", "SizeLookup", "TensorInfo",
           "TensorSource", "atomic_output", "check_not_inputs", "check_space", "gguf_sizes", "make_kv",
           "output_target", "split_path"]
