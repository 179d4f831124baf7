"""Linearizable reads in the core: ReadIndex (§6.4) and what a leader lease may rest on.

Rule: a read is confirmed at the commit index current when it was asked, once a quorum has
acknowledged a broadcast round started after it; a leader serves none before it committed an
entry of its own term (reads asked earlier wait for that commit). A lease (timed by the driver,
argued in ``raft/lease.py``) rests only on a round of the current term and configuration, only
with check-quorum on, and never once this leader started a leadership transfer in its term.
"""

from __future__ import annotations

from raftcache.raft.core_state import CoreState, Role
from raftcache.raft.errors import NotLeaderError


class ReadsMixin(CoreState):
    def request_read(self, read_id: int) -> None:
        """Ask for a linearizable read point; confirmed later through ``Ready.reads``."""
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if not self._committed_in_term():
            self._reads_waiting_commit.append(read_id)
            return
        self._register_read(read_id)

    def _register_read(self, read_id: int) -> None:
        self._pending_reads.append((read_id, self.commit_index, self.round + 1))
        self._broadcast_due = True
        self._advance_reads()

    def quorum_round(self) -> int:
        conf = self.configuration
        rounds = sorted(
            (self.round if v == self.id else self.progress[v].acked_round)
            for v in conf.voters
            if v == self.id or v in self.progress
        )
        if len(rounds) < len(conf.voters):
            return 0
        return rounds[len(rounds) - conf.quorum()]

    def lease_round(self, confirmed: int | None = None) -> int:
        """The newest broadcast round a quorum acknowledged that may ground a lease, or 0
        (``confirmed``: ``quorum_round()`` when the caller has it already)."""
        if not self.lease_allowed():
            return 0
        if confirmed is None:
            confirmed = self.quorum_round()
        return confirmed if confirmed >= self.lease_floor_round else 0

    def lease_allowed(self) -> bool:
        """Whether this node may serve reads from a lease at all right now (the driver still
        checks the lease's time and epoch). Check-quorum is what makes followers refuse votes
        inside their lease; a transfer lets the target's votes through regardless."""
        return (
            self.role is Role.LEADER
            and self.cfg.check_quorum
            and not self.transfer_started
            and self._committed_in_term()
        )

    def _advance_reads(self) -> None:
        if not self._pending_reads:
            return
        confirmed = self.quorum_round()
        keep = []
        for read_id, index, needed in self._pending_reads:
            if needed <= confirmed:
                self._confirmed.append((read_id, index))
            else:
                keep.append((read_id, index, needed))
        self._pending_reads = keep
