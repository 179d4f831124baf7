"""Clock faults for real node processes, through libfaketime (``LD_PRELOAD``).

Rule: a node started with ``ClockControl.env(node)`` reads every clock — wall time and the
monotonic clock its event loop and Raft timers run on — through the setting written in its own
control file. Two kinds of fault, with opposite verdicts for lease reads:

- **Jumps** (``set_offset``): writing ``+5`` makes that node's time jump 5 s ahead; going back
  (``-5``, or from ``+5`` to ``+0``) makes even its *monotonic* clock jump backwards, which real
  clocks never do but VM migrations and buggy hypervisors come close to: timers stall, and a
  leader's lease outlives the real time it was granted for. A lease read trusts the clock by
  design (docs/api.md), so under jumps the harness checks lease reads apart and reports their
  anomalies as notes, not violations.
- **Drift** (``set_rate``): the node's clocks keep running, without a jump, at ``rate`` times
  real speed (libfaketime's ``x`` modifier: ``+0 x0.92`` runs at 92 %). A drift inside the
  cluster's ``lease_clock_drift`` bound (default 10 %) is exactly what the lease is designed
  to survive, so under drift lease reads stay checked *strictly*.

How a rate change stays continuous. libfaketime computes, for every clock, ``fake(t) = S + X +
(t - S) * rate`` from the setting ``+X xRATE`` and the instant ``S`` it initialised in that
process (its monotonic clock is built on the same formula, so both clocks get the same rate).
Changing the rate at real time ``w`` without a jump needs ``X' = X + (w - S) * (rate - rate')``,
so the control keeps a model of each incarnation: ``started(node)`` records ``S`` (the harness
calls it right after spawning, within a millisecond of libfaketime's own start), and every write
recomputes ``X``. The setting is written atomically (a rename), and a drifting cluster runs
with no cache (``cache=False``): a setting read late would land as a jump of ``(read - write)
* |1 - rate|``; with the cache off it is read on the next clock call (microseconds; a few
milliseconds for an idle loop), i.e. well under a millisecond of error at 8 % drift. We avoid
``FAKETIME_XRESET`` (it re-anchors the monotonic clock on the last *wall* reading, a backwards
jump of whatever separates the two) and ``@date`` settings (they restart at the instant the
file is read, a jump by the read delay itself). ``FAKETIME_DONT_FAKE_MONOTONIC`` is forced to
``0``: a monotonic clock left real would make the drift invisible to the Raft timers.

libfaketime is a Debian package (``apt-get install libfaketime``); without it clock faults are
unavailable and ``find_libfaketime`` returns None. ``RAFTCACHE_LIBFAKETIME`` names the library
explicitly.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CLEARED_VARIABLES", "ClockControl", "find_libfaketime"]

_CANDIDATES = (
    "/usr/lib/*/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
    "/usr/local/lib/faketime/libfaketimeMT.so.1",
)

#: libfaketime settings inherited from the harness's environment that would change what a
#: control file means; a node under clock control is started without them.
CLEARED_VARIABLES = ("FAKETIME", "FAKETIME_XRESET", "FAKETIME_DONT_RESET", "FAKETIME_FMT")


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


@dataclass(slots=True)
class _Setting:
    """One incarnation's clock: ``fake(t) = start + base + (t - start) * rate``."""

    start: float
    base: float = 0.0
    rate: float = 1.0

    def fake(self, t: float) -> float:
        return self.start + self.base + (t - self.start) * self.rate


class ClockControl:
    """Per-node clock offsets (jumps) and rates (drift), one control file per node.

    Args:
        library: The libfaketime shared object to preload.
        directory: Where the control files live (``<node>.faketime``).
        cache: Re-read a control file at most once a second (True) or on every clock read
            (False: a change lands at once, at the price of a file read per clock read —
            about 4 µs). Rate changes need False (see the module docstring).
        wall: The harness's wall clock (real time, the same clock libfaketime reads).
    """

    def __init__(
        self,
        library: str,
        directory: Path,
        *,
        cache: bool = True,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.library = library
        self.directory = directory
        self.cache = cache
        self._wall = wall
        #: The jump each node's clocks are shifted by (``set_offset``), on top of any drift.
        self.offsets: dict[str, float] = {}
        self._settings: dict[str, _Setting] = {}

    def _file(self, node: str) -> Path:
        return self.directory / f"{node}.faketime"

    def env(self, node: str) -> dict[str, str]:
        """Environment entries that put ``node`` under this control (real time to start)."""
        self._settings[node] = _Setting(start=self._wall())
        self.offsets[node] = 0.0
        self._write(node)
        env = {
            "LD_PRELOAD": self.library,
            "FAKETIME_TIMESTAMP_FILE": str(self._file(node)),
            # Both names libfaketime reads: "0" fakes the monotonic clock too.
            "FAKETIME_DONT_FAKE_MONOTONIC": "0",
            "DONT_FAKE_MONOTONIC": "0",
        }
        if self.cache:
            # Re-read the file at most once a second: a jump lands within a second, and the
            # node does not pay a file read on each of its many clock reads.
            env["FAKETIME_CACHE_DURATION"] = "1"
        else:
            env["FAKETIME_NO_CACHE"] = "1"
        return env

    def started(self, node: str, at: float | None = None) -> None:
        """A new incarnation of ``node`` started (libfaketime initialised) at ``at`` (now):
        its clocks restart from real time + the current setting's base."""
        setting = self._setting(node)
        setting.start = self._wall() if at is None else at

    def _setting(self, node: str) -> _Setting:
        return self._settings.setdefault(node, _Setting(start=self._wall()))

    def _write(self, node: str) -> None:
        setting = self._setting(node)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._file(node)
        tmp = path.with_suffix(".tmp")
        # ``x`` always explicit: libfaketime keeps the previous rate when a setting omits it.
        tmp.write_text(f"{setting.base:+.6f} x{setting.rate:.6f}\n", encoding="ascii")
        os.replace(tmp, path)

    def set_offset(self, node: str, seconds: float) -> None:
        """Jump ``node``'s clocks to real time + ``seconds`` (+ any drift accumulated so far),
        either way; the rate is kept."""
        setting = self._setting(node)
        setting.base += seconds - self.offsets.get(node, 0.0)
        self.offsets[node] = seconds
        self._write(node)

    def set_rate(self, node: str, rate: float) -> None:
        """From now on ``node``'s clocks run at ``rate`` times real speed, without a jump."""
        if rate <= 0:
            raise ValueError("a clock rate must be positive")
        setting = self._setting(node)
        now = self._wall()
        setting.base += (now - setting.start) * (setting.rate - rate)
        setting.rate = rate
        self._write(node)

    def rate(self, node: str) -> float:
        return self._setting(node).rate

    def skew(self, node: str) -> float:
        """How far ``node``'s clocks are from real time now (jumps and drift), in seconds."""
        now = self._wall()
        return self._setting(node).fake(now) - now
