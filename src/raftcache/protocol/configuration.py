"""Cluster membership configuration: voters and learners with their addresses.

Rule: a leaf module (imports nothing from raftcache). A configuration is immutable; changes make a
new one. It is stored in CONFIG log entries and in snapshot metadata in one encoding, ``encode``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Configuration:
    """Voting members and non-voting learners, each mapped to its address (or None if unknown)."""

    voters: Mapping[str, str | None] = field(default_factory=dict)
    learners: Mapping[str, str | None] = field(default_factory=dict)

    @classmethod
    def of(cls, voters: Iterable[str]) -> Configuration:
        return cls(voters={v: None for v in sorted(voters)})

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "v": FORMAT_VERSION,
                "voters": dict(sorted(self.voters.items())),
                "learners": dict(sorted(self.learners.items())),
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Configuration:
        obj: Any = orjson.loads(data)
        if not isinstance(obj, dict) or obj.get("v") != FORMAT_VERSION:
            raise ValueError(f"unsupported configuration encoding: {data[:80]!r}")
        return cls(voters=dict(obj["voters"]), learners=dict(obj["learners"]))

    def is_voter(self, node_id: str) -> bool:
        return node_id in self.voters

    def all_ids(self) -> list[str]:
        """Voters then learners, each sorted: a deterministic iteration order."""
        return sorted(self.voters) + sorted(self.learners)

    def address_of(self, node_id: str) -> str | None:
        return self.voters.get(node_id) or self.learners.get(node_id)

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def with_learner(self, node_id: str, address: str | None) -> Configuration:
        learners = dict(self.learners)
        learners[node_id] = address
        voters = {k: v for k, v in self.voters.items() if k != node_id}
        return Configuration(voters=voters, learners=learners)

    def with_voter(self, node_id: str, address: str | None) -> Configuration:
        voters = dict(self.voters)
        voters[node_id] = address if address is not None else self.address_of(node_id)
        learners = {k: v for k, v in self.learners.items() if k != node_id}
        return Configuration(voters=voters, learners=learners)

    def without(self, node_id: str) -> Configuration:
        return Configuration(
            voters={k: v for k, v in self.voters.items() if k != node_id},
            learners={k: v for k, v in self.learners.items() if k != node_id},
        )
