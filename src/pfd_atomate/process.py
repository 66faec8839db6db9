"""Child processes that do not outlive the process that started them.

A launcher or script killed by pid (``kill -9``, a scheduler's signal to one process, a test's
SIGKILL) leaves its children running: a ``dp train`` would go on using a core for an hour, a
database server would keep its files open. :func:`die_with_parent` is the ``preexec_fn`` that
prevents it on Linux.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int) -> Callable[[], None] | None:
    """A ``subprocess.Popen(preexec_fn=...)`` that makes the child receive ``sig`` when the thread
    that started it ends (Linux ``prctl(PR_SET_PDEATHSIG)``), i.e. when its parent process dies.

    ``prctl`` is looked up here, in the parent, so that the child runs no ``dlopen`` between fork
    and exec (the loader's lock may be held by another of the parent's threads at fork time).

    Returns ``None`` (no ``preexec_fn``) where there is no ``prctl``: the child then outlives a
    killed parent.
    """
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    signal_number = int(sig)

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, signal_number)

    return set_pdeathsig
