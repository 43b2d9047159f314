"""Errors qf reports to users.

Every error a user can cause is a :class:`QfError`; the CLI prints its message on one line and exits with
``exit_code``.  Messages name the file, tensor, row or option at fault.
"""

from __future__ import annotations


class QfError(Exception):
    """Base class: a problem with the user's input, printed as one line."""

    exit_code = 1

    def one_line(self) -> str:
        return " ".join(str(self).split())


class PluginError(QfError):
    """A plugin could not be loaded or registered something invalid."""

    exit_code = 3


class UnknownNameError(QfError):
    """An unknown quant type, strategy, preset or architecture name."""

    exit_code = 2


class GGUFFormatError(QfError):
    """A file that is not GGUF, is truncated, or is otherwise malformed."""


class ImatrixError(QfError):
    """An importance matrix that cannot be used."""


class InvalidWeightsError(QfError):
    """Weights that cannot be quantized (NaN/Inf, impossible shape)."""


class PlanError(QfError):
    """A quantization plan that cannot run (e.g. a missing imatrix entry)."""


class UsageError(QfError):
    """Contradictory or malformed options."""

    exit_code = 2


class OutputError(QfError):
    """The output cannot be written (no room, an I/O error); nothing was left behind."""


class Interrupted(QfError):
    """Stopped by a signal (SIGINT, SIGTERM, SIGHUP); nothing was left behind.  Exits with 128 + the signal."""

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}; no output written")


#: signals received while a run's handlers are installed (qf.app.pipeline.signals_raise).  A handler's raise can be
#: lost — Python reports and drops an exception raised inside a ctypes callback, and a signal that lands while numba
#: compiles or loads a kernel runs its handler inside one (llvmlite's object-cache callback) — so the work loops
#: also call :func:`check_interrupted` between kernel calls and units.
pending_signals: list[int] = []


def check_interrupted() -> None:
    """Raise for a signal received and not yet acted on: KeyboardInterrupt for SIGINT, :class:`Interrupted` else."""
    if pending_signals:
        import signal

        if pending_signals[0] == signal.SIGINT:
            raise KeyboardInterrupt
        raise Interrupted(pending_signals[0])
