"""Where output goes, checked before the first byte: never over an input, never replacing what is not a file.

* A regular file (or a name not yet taken) is written to a hidden temporary file beside it and renamed into place
  only when complete; on any error or signal the temporary file is removed and nothing appears under the name.
* A symbolic link is followed: the temporary file is written beside the link's target and renamed over the target,
  so the link stays a link.
* A character device or FIFO (``/dev/null``, a pipe) is streamed into as it is — never renamed over.
* A directory, a socket or a block device is refused, and so is any output that is an input (same device and inode:
  hard links, ``..`` paths and symbolic links included) or another output of the same run.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import attrs

from qf.errors import OutputError, UsageError

MiB = 1 << 20
#: room kept free beyond the planned bytes (file-system metadata, other writers)
SPACE_MARGIN = 16 * MiB


@attrs.frozen
class OutputTarget:
    """An output path and how it is written: ``real`` is where the bytes land (the target of a symbolic link, else
    the path itself); ``stream`` for a character device or FIFO, written in place."""

    path: Path
    real: Path
    stream: bool = False

    @property
    def folder(self) -> Path:
        return self.real.parent


def output_target(path: str | os.PathLike[str]) -> OutputTarget:
    """Classify an output path, refusing what cannot be written safely (one line naming the path)."""
    path = Path(path)
    try:
        st = os.stat(path)  # follows symbolic links
    except FileNotFoundError:
        real = Path(os.path.realpath(path))  # a dangling link writes its target
        folder = real.parent
        if not folder.is_dir():
            raise UsageError(f"output {path}: folder {folder} does not exist") from None
        _check_writable(path, folder)
        return OutputTarget(path, real)
    except OSError as exc:
        raise UsageError(f"output {path}: cannot use it: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"output {path}: is a directory")
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return OutputTarget(path, path, stream=True)
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"output {path}: not a regular file, character device or FIFO; refusing to replace it")
    real = Path(os.path.realpath(path))
    _check_writable(path, real.parent)
    return OutputTarget(path, real)


def _check_writable(path: Path, folder: Path) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"output {path}: folder {folder} is not writable")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_not_inputs(targets: Sequence[OutputTarget], inputs: Sequence[tuple[str, str | os.PathLike[str]]]) -> None:
    """Refuse an output that is one of the ``(what, path)`` inputs — compared by device and inode — or that another
    output of the same run also names."""
    ids = {}
    for what, p in inputs:
        ident = _identity(Path(p))
        if ident is not None:
            ids.setdefault(ident, (what, p))
    seen: dict[object, Path] = {}
    for t in targets:
        if t.stream:
            continue
        ident = _identity(t.real)
        if ident is not None and ident in ids:
            what, p = ids[ident]
            same = "input and output files are the same" if what == "input" else f"output {t.path} is the {what}"
            raise UsageError(f"{same}: '{p}' (refusing to write over an input)")
        key = ident or t.real
        if key in seen:
            raise UsageError(f"outputs {seen[key]} and {t.path} are the same file")
        seen[key] = t.path


def check_space(targets: Sequence[OutputTarget], sizes: Sequence[int]) -> None:
    """Refuse when a file system lacks room for the planned bytes (plus :data:`SPACE_MARGIN`), counting what the
    outputs replace as freed only once they are complete (so not at all here)."""
    need: dict[int, tuple[int, Path]] = {}
    for t, size in zip(targets, sizes):
        if t.stream:
            continue
        dev = os.stat(t.folder).st_dev
        total, folder = need.get(dev, (0, t.folder))
        need[dev] = (total + size, folder)
    for total, folder in need.values():
        free = shutil.disk_usage(folder).free
        if total + SPACE_MARGIN > free:
            raise OutputError(
                f"not enough space in {folder}: the output needs {total / MiB:.1f} MiB (+{SPACE_MARGIN // MiB} MiB"
                f" margin), {free / MiB:.1f} MiB are free (--no-space-check skips this check)"
            )


@contextmanager
def atomic_output(target: OutputTarget | str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """An open binary file for ``target``: a temporary file beside it, renamed into place only on success and removed
    on any error, interrupt or signal (a device or FIFO is written in place).  Write errors (a full disk, an I/O
    error) become one :class:`OutputError` line."""
    if not isinstance(target, OutputTarget):
        target = output_target(target)
    if target.stream:
        try:
            with open(target.path, "wb") as fh:
                yield fh
        except OSError as exc:
            raise OutputError(f"cannot write {target.path}: {exc.strerror or exc}") from None
        return
    tmp = target.real.with_name(f".{target.real.name}.qf-tmp-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        raise OutputError(f"cannot create a temporary file beside {target.path}: {exc.strerror}") from None
    fh = os.fdopen(fd, "wb")
    try:
        yield fh
        fh.close()
        os.replace(tmp, target.real)
    except BaseException as exc:
        try:
            fh.close()
        except OSError:
            pass  # closing flushes; on a full disk that fails again: the file is being removed anyway
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # ENOSPC, EIO, EDQUOT, EFBIG ...: writing is all the block does to files
            raise OutputError(f"cannot write {target.path}: {exc.strerror or exc}; nothing was written") from None
        raise
