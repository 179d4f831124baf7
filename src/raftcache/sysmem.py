"""Giving freed heap memory back to the operating system (glibc's ``malloc_trim``).

Rule: call ``release_free_memory`` after a large batch of objects was freed — the Raft log's
commands after a snapshot compacted them — never on a hot path. glibc keeps freed blocks in its
arenas when live blocks sit among them, so RSS stays at its high-water mark: after a 1 M-key
load, compacting ~116 MiB of log left a node at 425–440 MiB; ``malloc_trim(0)`` brought it to
~300 MiB in ~9 ms (docs/performance.md, "Memory"). On a libc without it (musl, macOS) this
does nothing. Run it off the event loop: ctypes releases the GIL during the call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return free heap pages to the OS; True when glibc did so (False: nothing or no glibc)."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
