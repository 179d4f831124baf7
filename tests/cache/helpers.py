"""Small helpers shared by the cache tests: a machine fed through a log with rising indices."""

from __future__ import annotations

from raftcache.cache.commands import encode_format
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.results import Result


class Log:
    """Applies encoded commands to a machine at increasing indices and records them."""

    def __init__(self, machine: CacheStateMachine | None = None) -> None:
        self.machine = machine if machine is not None else CacheStateMachine()
        self.entries: list[tuple[int, bytes]] = []
        self.index = 0

    def apply(self, command: bytes, gap: int = 1) -> Result:
        self.index += gap
        self.entries.append((self.index, command))
        return self.machine.apply_entry(self.index, command)

    def version(self, command: bytes) -> int:
        """Apply a write expected to succeed with a version (SET); returns it."""
        result = self.apply(command)
        assert type(result) is int, result
        return result


def v2_log(machine: CacheStateMachine | None = None) -> Log:
    """A ``Log`` whose first entry (index 1) enables command format 2, as the leader does once
    every node supports it (``raftcache.cache.upgrade``)."""
    log = Log(machine)
    assert log.apply(encode_format(2, now=0.0)) == 2
    return log
