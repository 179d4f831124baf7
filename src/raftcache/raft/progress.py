"""Progress: what a leader knows about one follower's log, and how it may send to it.

Rule: a follower is in one of three states (as in etcd-io/raft):
- PROBE: we don't know where its log matches ours; one AppendEntries in flight at a time, and
  ``next_index`` backs off with the conflict hints of each rejection.
- REPLICATE: its log matches up to ``match_index``; AppendEntries are pipelined, ``next_index``
  advances optimistically on send, bounded by ``max_inflight`` requests in flight.
- SNAPSHOT: it needs entries we compacted; we stream the snapshot in chunks, one at a time.
A failed or rejected request returns the follower to PROBE, so stale pipelined state never piles up.
"""

from __future__ import annotations

from enum import Enum


class ProgressState(Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "acked_round",
        "commit_sent",
        "inflight",
        "is_learner",
        "last_active",
        "last_heard",
        "lent",
        "match_index",
        "next_index",
        "probe_sent",
        "snapshot_index",
        "snapshot_offset",
        "state",
    )

    def __init__(self, next_index: int, *, is_learner: bool = False) -> None:
        self.match_index = 0
        self.next_index = next_index
        self.state = ProgressState.PROBE
        self.inflight = 0
        #: A heartbeat answer lent a slot (``lend``): the next reply repays it instead of
        #: freeing one, so at most one message beyond the count is ever out.
        self.lent = False
        #: In PROBE, whether a probe is outstanding (only one at a time).
        self.probe_sent = False
        #: The leader's tick count when this follower last answered (check-quorum window).
        self.last_active = 0
        #: The leader's tick count when this follower last answered in this term — never a
        #: grace value (``last_active`` is set to "now" at election for check-quorum): what
        #: the strict reconfiguration check counts (``RaftCore.quorum_active_in``).
        self.last_heard: int | None = None
        #: Highest broadcast round this follower acknowledged in our term (ReadIndex, lease).
        self.acked_round = 0
        #: Highest commit index this follower could learn from what we sent it in our term
        #: (each message's commit index capped by the entries it matches up to): a commit-only
        #: update is due only when min(commit, match) is beyond it.
        self.commit_sent = 0
        self.is_learner = is_learner
        #: SNAPSHOT state: which snapshot is being sent and the next byte offset.
        self.snapshot_index = 0
        self.snapshot_offset = 0

    def can_send(self, max_inflight: int) -> bool:
        if self.state is ProgressState.PROBE:
            return not self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflight < max_inflight
        return self.inflight == 0

    def become_probe(self) -> None:
        self.state = ProgressState.PROBE
        self.next_index = max(self.match_index + 1, 1)
        self.probe_sent = False

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next_index = self.match_index + 1
        self.probe_sent = False

    def become_snapshot(self, snapshot_index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.snapshot_index = snapshot_index
        self.snapshot_offset = 0
        self.probe_sent = False

    def on_sent(self, last_index: int) -> None:
        self.inflight += 1
        if self.state is ProgressState.REPLICATE:
            self.next_index = max(self.next_index, last_index + 1)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def lend(self) -> bool:
        """Free one slot before its message is answered (a heartbeat answer showed the
        follower alive while an append may be lost); False if one is already lent."""
        if self.lent or self.inflight == 0:
            return False
        self.lent = True
        self.inflight -= 1
        return True

    def on_reply(self) -> None:
        if self.lent:
            self.lent = False  # this reply's slot was freed already
        else:
            self.inflight = max(0, self.inflight - 1)
        if self.state is ProgressState.PROBE:
            self.probe_sent = False

    def maybe_update(self, match_index: int) -> bool:
        """Record a successful append up to ``match_index``; True if it advanced."""
        advanced = match_index > self.match_index
        if advanced:
            self.match_index = match_index
        self.next_index = max(self.next_index, match_index + 1)
        return advanced
