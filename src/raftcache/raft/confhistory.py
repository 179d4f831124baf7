"""ConfigHistory: the configurations a node's log holds, and which one is in force where.

Rule: a configuration takes effect when its entry is appended, not when it commits
(dissertation §4.1), so the one in force is always the newest in the history: a base (the
snapshot's, or the bootstrap) then one per CONFIG entry of the log, in index order. Truncating
the log drops the configurations of the entries it removed (never the base); a snapshot becomes
the new base, keeping later configurations only when the entries after it survive.
"""

from __future__ import annotations

from collections.abc import Iterable

from raftcache.protocol.configuration import Configuration
from raftcache.protocol.messages import EntryKind, LogEntry


class ConfigHistory:
    """(index, configuration) pairs in index order; the first is the base."""

    __slots__ = ("_configs",)

    def __init__(self, base_index: int, base: Configuration, entries: Iterable[LogEntry]) -> None:
        self._configs: list[tuple[int, Configuration]] = [(base_index, base)]
        self.record(entries)

    @property
    def current(self) -> Configuration:
        """The configuration in force: the newest one appended."""
        return self._configs[-1][1]

    @property
    def current_index(self) -> int:
        """The index of the entry (or base) that holds ``current``."""
        return self._configs[-1][0]

    def record(self, entries: Iterable[LogEntry]) -> bool:
        """Add the configurations of newly appended ``entries``; True if any was one."""
        changed = False
        for e in entries:
            if e.kind == EntryKind.CONFIG:
                self._configs.append((e.index, Configuration.decode(e.command)))
                changed = True
        return changed

    def truncate(self, from_index: int) -> None:
        """The log lost its entries from ``from_index`` on: forget their configurations."""
        while len(self._configs) > 1 and self._configs[-1][0] >= from_index:
            self._configs.pop()

    def rebase(self, index: int, base: Configuration, *, keep_later: bool) -> None:
        """A snapshot up to ``index`` with configuration ``base`` replaced the log before it;
        later configurations stay only if ``keep_later`` (the entries after it survived)."""
        later = [(i, c) for i, c in self._configs if i > index] if keep_later else []
        self._configs = [(index, base), *later]

    def at(self, index: int) -> Configuration:
        """The configuration in force at ``index``."""
        conf = self._configs[0][1]
        for i, c in self._configs:
            if i <= index:
                conf = c
        return conf

    def all(self) -> list[Configuration]:
        """Every configuration held, base first."""
        return [c for _, c in self._configs]
