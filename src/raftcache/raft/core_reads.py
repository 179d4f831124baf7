"""Linearizable reads in the core: ReadIndex (§6.4).

Rule: a read is confirmed at the commit index current when it was asked, once a quorum has
acknowledged a broadcast round started after it; a leader serves none before it committed an
entry of its own term (reads asked earlier wait for that commit).
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
