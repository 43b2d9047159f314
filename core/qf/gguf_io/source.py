"""The tensors of a model as a set of GGUF files: one file, or the splits of ``gguf-split``
(``*-00001-of-00003.gguf``)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from qf.errors import GGUFFormatError
from qf.gguf_io.kv import KV
from qf.gguf_io.reader import GGUFFile, SizeLookup, TensorInfo, gguf_sizes

_SPLIT = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def split_path(prefix: str, split_no: int, split_count: int) -> str:
    """llama_split_path: PREFIX-0000N-of-0000M.gguf (split_no counts from 0)."""
    return f"{prefix}-{split_no + 1:05d}-of-{split_count:05d}.gguf"


class TensorSource:
    """Tensors of all splits, each :class:`TensorInfo` tagged with its file index; metadata from the first file."""

    def __init__(self, files: list[GGUFFile]) -> None:
        self.files = files
        self.path = files[0].path
        self.kvs: list[KV] = files[0].kvs
        self.tensors: list[TensorInfo] = [t for f in files for t in f.tensors]

    @classmethod
    def open(cls, path: str | os.PathLike[str], sizes: SizeLookup = gguf_sizes) -> TensorSource:
        """The model at ``path``, with every split when it is the first of a split set."""
        first = GGUFFile.open(path, sizes)
        count = first.get("split.count", 0) or 0
        if count <= 1:
            return cls([first])
        m = _SPLIT.match(str(path))
        if m is None or int(m.group("no")) != 1:
            raise GGUFFormatError(f"{path}: split {first.get('split.no', 0) + 1} of {count}; open the first split"
                                  f" (named PREFIX-00001-of-{count:05d}.gguf)")
        files = [first]
        for i in range(1, count):
            p = Path(split_path(m.group("prefix"), i, count))
            if not p.exists():
                raise GGUFFormatError(f"{path}: split {i + 1} of {count} is missing: {p}")
            files.append(GGUFFile.open(p, sizes, file_index=i))
        names = [t.name for t in files[0].tensors]
        for f in files[1:]:
            names += [t.name for t in f.tensors]
        if len(set(names)) != len(names):
            raise GGUFFormatError(f"{path}: the splits hold duplicate tensor names")
        return cls(files)

    def get(self, key: str, default: Any = None) -> Any:
        return self.files[0].get(key, default)

    @property
    def metadata(self) -> dict[str, Any]:
        return self.files[0].metadata

    def tensor(self, name: str) -> TensorInfo:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def tensor_data(self, t: TensorInfo) -> np.ndarray:
        return self.files[t.file_index].tensor_data(t)

    def rows(self, t: TensorInfo, start: int, stop: int) -> np.ndarray:
        return self.files[t.file_index].rows(t, start, stop)

    def row_bytes(self, t: TensorInfo) -> int:
        return self.files[t.file_index].row_bytes(t)

    def release(self, t: TensorInfo) -> None:
        self.files[t.file_index].release(t)
