"""The four HTTP workloads, and the Protocol every HTTP cluster under test implements.

Rule: a workload is named once here and turned into wrk arguments by each system, so every
system runs the same key space, value size and read/write mix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from benchmarks.suite.wrk import WrkJob

WORKLOADS = ("write", "read-linearizable", "read-stale", "mix-90/10")


@dataclass(frozen=True, slots=True)
class Shape:
    """What the load looks like, shared by every system."""

    keys: int = 10_000
    value_size: int = 100
    read_ratio: float = 0.9


class HttpCluster(Protocol):
    """A running cluster that wrk can load through its leader."""

    label: str

    def pids(self) -> dict[str, int]:
        """Process ids by role label (``leader``, ``follower1``, …) for CPU sampling."""
        ...

    def prefill(self, shape: Shape) -> None:
        """Write every key of the key space once, so reads hit."""
        ...

    def job(self, workload: str, connections: int, shape: Shape) -> WrkJob:
        """The wrk run of ``workload`` against the leader."""
        ...
