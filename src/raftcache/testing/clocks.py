"""Clock faults for real node processes, through libfaketime (``LD_PRELOAD``).

Rule: a node started with ``ClockControl.env(node)`` reads every clock — wall time and the
monotonic clock its event loop and Raft timers run on — shifted by the offset written in its
own control file, re-read at most once a second (or on every clock read with ``cache=False``,
for tests that must know the instant a jump lands). Writing ``+5`` makes that node's time jump
5 s ahead; writing ``-5`` (or going back from ``+5`` to ``+0``) makes even its *monotonic* clock
jump backwards, which real clocks never do but VM migrations and buggy hypervisors come close
to: timers stall, and a leader's lease outlives the real time it was granted for.

Under such faults only ``consistency=linearizable`` reads must stay linearizable: a lease read
trusts the clock by design (docs/api.md), so the harness checks lease reads apart and reports
their anomalies as notes, not violations.

libfaketime is a Debian package (``apt-get install libfaketime``); without it clock faults are
unavailable and ``find_libfaketime`` returns None. ``RAFTCACHE_LIBFAKETIME`` names the library
explicitly.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ClockControl", "find_libfaketime"]

_CANDIDATES = (
    "/usr/lib/*/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
    "/usr/local/lib/faketime/libfaketimeMT.so.1",
)


def find_libfaketime(environ: Mapping[str, str] | None = None) -> str | None:
    """The multi-threaded libfaketime (nodes fsync in a worker thread), or None."""
    environ = os.environ if environ is None else environ
    explicit = environ.get("RAFTCACHE_LIBFAKETIME")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for pattern in _CANDIDATES:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


class ClockControl:
    """Per-node clock offsets, applied through one control file per node.

    Args:
        library: The libfaketime shared object to preload.
        directory: Where the control files live (``<node>.faketime``).
        cache: Re-read a control file at most once a second (True) or on every clock read
            (False: a jump lands at once, at the price of a file read per clock read).
    """

    def __init__(self, library: str, directory: Path, *, cache: bool = True) -> None:
        self.library = library
        self.directory = directory
        self.cache = cache
        self.offsets: dict[str, float] = {}

    def _file(self, node: str) -> Path:
        return self.directory / f"{node}.faketime"

    def env(self, node: str) -> dict[str, str]:
        """Environment entries that put ``node`` under this control (offset 0 to start)."""
        self.set_offset(node, 0.0)
        env = {"LD_PRELOAD": self.library, "FAKETIME_TIMESTAMP_FILE": str(self._file(node))}
        if self.cache:
            # Re-read the file at most once a second: a jump lands within a second, and the
            # node does not pay a file read on each of its many clock reads.
            env["FAKETIME_CACHE_DURATION"] = "1"
        else:
            env["FAKETIME_NO_CACHE"] = "1"
        return env

    def set_offset(self, node: str, seconds: float) -> None:
        """Shift ``node``'s clocks to real time + ``seconds`` (a jump, either way)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._file(node).write_text(f"{seconds:+.3f}\n", encoding="ascii")
        self.offsets[node] = seconds
