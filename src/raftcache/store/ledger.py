"""The replica ledger: which replicas a store created after its bootstrap, and which it removed.

Rule: the ledger is the store's durable record of replica moves, written before the data
changes. A replica created on the store (``Store.add_replica``) is recorded — its group, id and
the voters it was created knowing — before its directory is made; a replica removed
(``Store.remove_replica``) gets a *tombstone* in the same atomic write that drops its record,
before a byte of its data is deleted. On start the store hosts: the recorded replicas, and its
bootstrap replicas (the placement's) that are not tombstoned; a directory of a tombstoned
replica is a removal a crash interrupted, and is deleted.

No replica id is ever created twice: a store refuses a tombstoned id, and its next replica of a
group takes the next incarnation (``<store>.<n>``, ``raftcache.network.groups.replica_id``),
above every incarnation it held for the group, so a vote or an append meant for a removed
replica is never taken for its successor (docs/sharding.md, "A replica id is never reused").
Only this store makes ids of its own, so allocating them here is safe; a store whose directory
is lost rejoins under a new store id.

On disk: ``<data-dir>/REPLICAS``, JSON, replaced atomically (``storage.fsio.atomic_write``);
without a data directory (tests) the ledger lives in memory, shared by a store's restarts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from raftcache.network.groups import INCARNATION_SEPARATOR, store_of
from raftcache.storage.fsio import FileOps, atomic_write

LEDGER_FILE: Final = "REPLICAS"
FORMAT: Final = 1


class LedgerMismatchError(ValueError):
    """A store's directories disagree with its ledger (a replica the ledger does not know)."""


def incarnation_of(replica_id: str) -> int:
    """The incarnation number of a replica id (0 for a store's first replica of a group)."""
    _, sep, number = replica_id.partition(INCARNATION_SEPARATOR)
    return int(number) if sep and number.isdigit() else 0


@dataclass(frozen=True, slots=True)
class ReplicaRecord:
    """A replica created after bootstrap: its group, id and the voters it was created knowing."""

    group: str
    replica: str
    voters: tuple[str, ...]


class ReplicaLedger:
    """A store's ledger (see the module docstring); ``path`` None keeps it in memory."""

    def __init__(self, store_id: str, path: Path | None) -> None:
        self.store_id = store_id
        self._path = path
        self._records: dict[str, ReplicaRecord] = {}
        self._dead: set[tuple[str, str]] = set()
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                if data.get("format") != FORMAT:
                    raise ValueError(f"not a format-{FORMAT} ledger")
                for entry in data["replicas"]:
                    record = ReplicaRecord(
                        str(entry["group"]), str(entry["replica"]), tuple(entry["voters"])
                    )
                    self._records[record.group] = record
                for entry in data["tombstones"]:
                    self._dead.add((str(entry["group"]), str(entry["replica"])))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path} is damaged: {exc}") from None

    def record(self, group: str) -> ReplicaRecord | None:
        """The replica of ``group`` created on this store after bootstrap, if any."""
        return self._records.get(group)

    def removed(self, group: str, replica_id: str) -> bool:
        """Whether ``replica_id`` of ``group`` was removed from this store (tombstoned)."""
        return (group, replica_id) in self._dead

    def tombstones(self, group: str) -> list[str]:
        """The removed replica ids of ``group``, sorted."""
        return sorted(r for g, r in self._dead if g == group)

    def next_replica_id(self, group: str, current: Iterable[str] = ()) -> str:
        """The id of this store's next replica of ``group``: the next incarnation above every
        one it held (tombstoned, recorded, or ``current``)."""
        record = self._records.get(group)
        held = [*self.tombstones(group), *current, *([record.replica] if record else [])]
        number = 1 + max((incarnation_of(r) for r in held), default=0)
        return f"{self.store_id}{INCARNATION_SEPARATOR}{number}"

    def created(self, group: str, replica_id: str, voters: Sequence[str]) -> None:
        """Record a new replica (durable when this returns); refuses a removed id."""
        self._own(replica_id)
        if (group, replica_id) in self._dead:
            raise ValueError(f"replica {replica_id} of {group} was removed: ids are never reused")
        self._records[group] = ReplicaRecord(group, replica_id, tuple(voters))
        self._write()

    def tombstone(self, group: str, replica_id: str) -> None:
        """Record ``replica_id`` of ``group`` as removed, dropping its record, in one durable
        write."""
        self._own(replica_id)
        record = self._records.get(group)
        if record is not None and record.replica == replica_id:
            del self._records[group]
        self._dead.add((group, replica_id))
        self._write()

    def _own(self, replica_id: str) -> None:
        if store_of(replica_id) != self.store_id:
            raise ValueError(f"replica {replica_id} is not this store's ({self.store_id})")

    def _write(self) -> None:
        if self._path is None:
            return
        body = {
            "format": FORMAT,
            "replicas": [
                {"group": r.group, "replica": r.replica, "voters": list(r.voters)}
                for r in sorted(self._records.values(), key=lambda r: r.group)
            ],
            "tombstones": [{"group": g, "replica": r} for g, r in sorted(self._dead)],
        }
        data = (json.dumps(body, indent=1) + "\n").encode()
        atomic_write(FileOps(), str(self._path), data, fsync=True)
