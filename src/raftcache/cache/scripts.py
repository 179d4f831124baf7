"""The script table: the Lua scripts EVALSHA can name, as replicated state (command format 4).

Rule: the table changes only by applying entries — SCRIPT LOAD and EVAL add a body, SCRIPT
FLUSH empties it — so every replica holds the same table at the same index, and snapshots
carry it (a node restarted or rebuilt from a snapshot still knows every loaded script).
EVALSHA resolves a SHA-1 on the leader, after a read barrier, and proposes the body itself
(``raftcache.cache.commands_v4``): what runs never depends on a replica's table.

Bounded: at most ``MAX_SCRIPTS`` bodies; adding one more drops the oldest (insertion order,
so the same one everywhere). A client whose script was dropped gets ``NOSCRIPT`` and sends
EVAL again, as redis-py's ``Script`` does.
"""

from __future__ import annotations

from typing import Any, Final

from raftcache.cache.scripting import sha1_hex

MAX_SCRIPTS: Final = 10_000


class ScriptTable:
    """SHA-1 (lower-case hex) → script body, oldest first."""

    __slots__ = ("_bodies",)

    def __init__(self) -> None:
        self._bodies: dict[str, bytes] = {}

    def __len__(self) -> int:
        return len(self._bodies)

    def add(self, body: bytes) -> str:
        """Add ``body`` (again: it stays where it was); its SHA-1."""
        sha = sha1_hex(body)
        bodies = self._bodies
        if sha not in bodies:
            if len(bodies) >= MAX_SCRIPTS:
                del bodies[next(iter(bodies))]
            bodies[sha] = body
        return sha

    def get(self, sha: str) -> bytes | None:
        return self._bodies.get(sha.lower())

    def clear(self) -> int:
        """Drop every script; how many there were."""
        dropped = len(self._bodies)
        self._bodies.clear()
        return dropped

    def to_wire(self) -> list[bytes]:
        """The bodies, oldest first (the snapshot's ``scripts``)."""
        return list(self._bodies.values())

    @classmethod
    def from_wire(cls, wire: Any) -> ScriptTable:
        """Inverse of ``to_wire``; ``ValueError`` on another shape."""
        if not isinstance(wire, list) or not all(isinstance(body, bytes) for body in wire):
            raise ValueError("scripts must be a list of script bodies")
        table = cls()
        for body in wire:
            table.add(body)
        return table
