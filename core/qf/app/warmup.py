"""Start numba's one-time set-up while the command line, the plugins and the plan are still being read.

The first kernel a process runs — even one loaded from numba's on-disk cache — pays numba's import (~0.3 s here) and
its target context's first refresh (every typing/lowering registry, the runtime's LLVM module: ~0.45 s).  Done on the
main thread's way to the first tensor, that is most of a small model's wall time.  :func:`start` does it on a daemon
thread (under numba's compiler lock, which every dispatch takes, so a kernel call simply waits for it if it comes
first); the LLVM parts release the GIL, so it overlaps the main thread's plugin loading, GGUF parsing and planning.
"""

from __future__ import annotations

import threading

_started = False


def _warm() -> None:
    try:
        import qf.kernels  # noqa: F401  (numba, and qf's cache folder, as the kernels will see them)
        from numba.core import registry
        from numba.core.compiler_lock import global_compiler_lock

        with global_compiler_lock:
            registry.cpu_target.target_context.refresh()
            registry.cpu_target.typing_context.refresh()
    except Exception:  # noqa: BLE001 - an optimisation only: the first kernel call does the same, and reports
        pass


def start() -> None:
    """Warm numba up on a daemon thread (once per process)."""
    global _started
    if not _started:
        _started = True
        threading.Thread(target=_warm, name="qf-numba-warmup", daemon=True).start()
