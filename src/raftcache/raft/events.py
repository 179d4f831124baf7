"""What operators read in the log: a node's Raft events, each one INFO line with the facts.

Rule: events are *observed*, never reported by the pure core: ``RaftEvents.observe`` compares the
core's term, leader and configuration after each cycle of the ready loop with what it saw last,
and logs each change once — a term change, a leader change (or a leader no longer known in the
same term), a membership change (added, removed, promoted; the new configuration). The first
observation of a run is the baseline and logs nothing (the start line says where a node begins).

Peers: ``PeerHealth`` follows the outcome of the RPCs a node sends. A peer is *lost* once its
RPCs have failed without a single success for ``lost_after`` seconds (an election timeout: a
lost heartbeat is not news), and *recovered* at its next answer; each is one line, whatever the
RPC rate, and the recovery says how long the peer was lost. A store hosting many groups shares
one ``PeerHealth`` between its groups, keyed by peer *store*: the groups' replicas on a store
that went down make one line, not one per group. Snapshot transfers are logged by the driver
where they end (sent: to whom, index, bytes; installed: from whom, index, bytes).

Fields travel as ``extra`` (``raftcache.process.logs`` prints them as ``key=value`` or JSON);
``node`` is the reporting node's id, ``group`` its Raft group on a store of many groups.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from raftcache.protocol.configuration import Configuration

__all__ = ["PeerHealth", "RaftEvents", "configuration_change"]

log = logging.getLogger("raftcache.raft.events")


def _ids(ids: object) -> str:
    return ",".join(sorted(ids)) if isinstance(ids, set | frozenset | list | dict) else str(ids)


def configuration_change(old: Configuration, new: Configuration) -> dict[str, str]:
    """The facts of a membership change: who was added (as voter or learner), removed or
    promoted, and the new voters and learners (comma-separated ids; empty parts left out)."""
    old_all, new_all = set(old.all_ids()), set(new.all_ids())
    promoted = {n for n in new.voters if n in old.learners}
    demoted = {n for n in new.learners if n in old.voters}
    facts = {
        "added_voters": _ids(set(new.voters) - old_all),
        "added_learners": _ids(set(new.learners) - old_all),
        "removed": _ids(old_all - new_all),
        "promoted": _ids(promoted),
        "demoted": _ids(demoted),
    }
    out = {k: v for k, v in facts.items() if v}
    out["voters"] = _ids(set(new.voters))
    if new.learners:
        out["learners"] = _ids(set(new.learners))
    return out


@dataclass(slots=True)
class _Seen:
    term: int
    leader: str | None
    configuration: Configuration


class RaftEvents:
    """Logs the term, leader and membership changes of one node's core (see the module rule)."""

    def __init__(self, node_id: str, group: str = "") -> None:
        self._fields: dict[str, Any] = {"node": node_id}
        if group:
            self._fields["group"] = group
        self._seen: _Seen | None = None

    def fields(self, **facts: Any) -> dict[str, Any]:
        """``extra`` for a line of this node: its id (and group), then ``facts``."""
        return {**self._fields, **facts}

    def reset(self) -> None:
        """A new run: its first observation is a baseline again."""
        self._seen = None

    def observe(self, term: int, leader: str | None, configuration: Configuration) -> None:
        seen = self._seen
        if seen is None:
            self._seen = _Seen(term, leader, configuration)
            return
        if term != seen.term:
            log.info(
                "term changed",
                extra=self.fields(term=term, previous_term=seen.term, leader=leader),
            )
        if leader != seen.leader:
            if leader is not None:
                log.info(
                    "leader changed",
                    extra=self.fields(leader=leader, term=term, previous_leader=seen.leader),
                )
            elif term == seen.term:  # with a new term, "term changed" said leader=None
                log.info(
                    "leader unknown", extra=self.fields(term=term, previous_leader=seen.leader)
                )
        if configuration is not seen.configuration and configuration != seen.configuration:
            log.info(
                "membership changed",
                extra=self.fields(**configuration_change(seen.configuration, configuration)),
            )
        self._seen = _Seen(term, leader, configuration)


@dataclass(slots=True)
class _Peer:
    failing_since: float | None = None
    lost_at: float | None = None


class PeerHealth:
    """Lost and recovered peers from the RPCs sent to them (see the module rule).

    Args:
        owner: the id of the node (or store) whose view this is, logged as ``node``.
        lost_after: seconds of failures with no success before a peer counts as lost.

    Times are seconds of any monotonic clock, passed by the caller.
    """

    def __init__(self, owner: str, lost_after: float) -> None:
        self.owner = owner
        self.lost_after = lost_after
        self._peers: dict[str, _Peer] = {}

    def lost(self) -> list[str]:
        """The peers lost now, sorted."""
        return sorted(p for p, s in self._peers.items() if s.lost_at is not None)

    def failed(self, peer: str, now: float, error: BaseException) -> None:
        """An RPC to ``peer`` failed (timed out, refused, reset) at ``now``."""
        state = self._peers.setdefault(peer, _Peer())
        if state.failing_since is None:
            state.failing_since = now
        if state.lost_at is None and now - state.failing_since >= self.lost_after:
            state.lost_at = now
            log.info(
                "peer lost",
                extra={
                    "node": self.owner,
                    "peer": peer,
                    "failing_s": round(now - state.failing_since, 3),
                    "error": str(error)[:200] or type(error).__name__,
                },
            )

    def answered(self, peer: str, now: float) -> None:
        """``peer`` answered an RPC at ``now``."""
        state = self._peers.get(peer)
        if state is None or state.failing_since is None:
            return  # the usual case: nothing was failing
        if state.lost_at is not None:
            log.info(
                "peer recovered",
                extra={
                    "node": self.owner,
                    "peer": peer,
                    "lost_for_s": round(now - state.failing_since, 3),
                },
            )
        state.failing_since = state.lost_at = None
