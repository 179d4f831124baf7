"""Divergence alarms: the replicated set of replicas found diverged, and this node's own faults.

Rule: an ``Alarm`` is replicated state — raised and lowered only by ALARM entries
(``raftcache.cache.commands_v3``), carried in snapshots — so every node reports the same set
in ``/v1/status``. A *local fault* is what a replica finds out about itself without a vote (a
snapshot whose entries do not match the digest it carries; its kept digest not matching its
entries when a snapshot is taken): node-local, it stops this replica's reads at once and is
reported to the leader, which replicates it as an alarm. A replica with either refuses every
read (``ReplicaDivergedError``): its state can no longer be trusted to be the log's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raftcache.cache.errors import CacheError


@dataclass(frozen=True, slots=True)
class Alarm:
    """``node_id`` was found diverged by the entry at ``index`` (at the leader's ``raised_at``
    wall-clock seconds), for ``reason``."""

    node_id: str
    reason: str
    index: int
    raised_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "kind": "corrupt",
            "reason": self.reason,
            "index": self.index,
            "raised_at": self.raised_at,
        }

    def to_wire(self) -> list[Any]:
        return [self.node_id, self.reason, self.index, self.raised_at]

    @classmethod
    def from_wire(cls, wire: object) -> Alarm:
        if not isinstance(wire, list) or len(wire) != 4:
            raise ValueError("an alarm is [node, reason, index, raised_at]")
        node_id, reason, index, raised_at = wire
        if not isinstance(node_id, str) or not isinstance(reason, str):
            raise ValueError("alarm node and reason must be strings")
        if type(index) is not int or not isinstance(raised_at, int | float):
            raise ValueError("alarm index must be an int and raised_at a number")
        return cls(node_id, reason, index, float(raised_at))


class ReplicaDivergedError(CacheError):
    """This replica's state is not trusted (a divergence alarm or a local fault names it): it
    refuses reads until an operator rebuilds it and clears the alarm (docs/operations.md).

    Attributes:
        node_id: this node.
        reason: why it is distrusted.
    """

    def __init__(self, node_id: str, reason: str) -> None:
        self.node_id = node_id
        self.reason = reason
        super().__init__(
            f"replica {node_id} diverged from the cluster and serves no reads ({reason}); "
            "read from another node"
        )


# The names before the ``…Error`` convention (ruff's N818), kept working: the same classes.
ReplicaDiverged = ReplicaDivergedError
