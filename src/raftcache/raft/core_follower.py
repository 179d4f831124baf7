"""The follower side of log replication: AppendEntries (§5.3).

Rule: log matching on every append — an entry is accepted only after the one before it matches
the leader's (``prev_log_index``/``prev_log_term``); a conflicting suffix is truncated, never a
committed entry; the commit index learnt from the leader is capped by what this request proved
we hold.
"""

from __future__ import annotations

from raftcache.protocol.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    LogEntry,
)
from raftcache.raft.core_state import CoreState


class FollowerMixin(CoreState):
    def handle_append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        if req.term < self.term:
            return AppendEntriesResponse(self.term, False, last_log_index=self.log.last_index())
        self._accept_leader(req.term, req.leader_id)
        prev, prev_term, entries = req.prev_log_index, req.prev_log_term, req.entries
        if prev < self.log.snapshot_index:
            # Entries up to our snapshot are committed, hence identical to the leader's.
            skip = self.log.snapshot_index - prev
            if skip >= len(entries):
                return self._append_ok(req, max(prev + len(entries), 0))
            entries = entries[skip:]
            prev, prev_term = self.log.snapshot_index, self.log.snapshot_term
        have = self.log.term_at(prev)
        if have is None:
            return AppendEntriesResponse(
                self.term,
                False,
                conflict_index=self.log.last_index() + 1,
                last_log_index=self.log.last_index(),
            )
        if have != prev_term:
            return AppendEntriesResponse(
                self.term,
                False,
                conflict_index=self.log.first_index_of_term(prev),
                conflict_term=have,
                last_log_index=self.log.last_index(),
            )
        self._merge_entries(entries)
        return self._append_ok(req, prev + len(entries))

    def _merge_entries(self, entries: list[LogEntry]) -> None:
        for i, e in enumerate(entries):
            have = self.log.term_at(e.index)
            if have == e.term:
                continue
            rest = entries[i:]
            if have is not None:
                assert e.index > self.commit_index, "a committed entry would be overwritten"
                self._truncate_configs(e.index)
                self.log.truncate_and_append(rest)
            else:
                self.log.append(rest)
            self._record_configs(rest)
            return

    def _append_ok(self, req: AppendEntriesRequest, last_new: int) -> AppendEntriesResponse:
        if req.leader_commit > self.commit_index:
            self.commit_index = max(self.commit_index, min(req.leader_commit, last_new))
        resp = AppendEntriesResponse(
            self.term, True, match_index=last_new, last_log_index=self.log.last_index()
        )
        if req.timeout_now and self.is_voter():
            self.campaign(transfer=True)
        return resp
