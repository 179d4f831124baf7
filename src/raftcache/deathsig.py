"""The ``preexec_fn`` that asks the kernel to signal a child when its parent dies (Linux).

Rule: a leaf that imports only the standard library, so the cluster supervisor (``cli/``) and the
fault harness (``testing/``, which may import no node package) share one hook and each passes the
signal it needs. The hook calls ``prctl(PR_SET_PDEATHSIG)`` in the forked child before ``exec``,
which covers a parent killed with SIGKILL, the one death no cleanup code sees. It then checks
that the parent is still the one that forked it: a parent that died between fork and ``prctl``
would never deliver the signal, so the child exits at once. On other systems there is no hook
(``None``), and the parent's own shutdown path is the only guarantee.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

__all__ = ["PR_SET_PDEATHSIG", "death_signal_hook"]

PR_SET_PDEATHSIG = 1


def death_signal_hook(signum: signal.Signals) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``signum`` when this process dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody would ever signal us.
        if os.getppid() != parent:
            os._exit(1)

    return hook
