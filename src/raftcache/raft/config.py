"""RaftConfig: the timing and sizing knobs of a Raft node, in seconds and counts.

Defaults are chosen for real processes on a busy 2-core machine: a 1-2 s randomized election
timeout and 100 ms heartbeats (as etcd), so a GC pause, an fsync stall or a neighbour's CPU
burst does not flap leadership. Simulations pass much shorter values.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RaftConfig:
    """Knobs of one Raft node (durations in seconds)."""

    election_timeout_min: float = 1.0
    election_timeout_max: float = 2.0
    heartbeat_interval: float = 0.1
    #: Granularity of the driver's clock: every timer is a whole number of ticks.
    tick_interval: float = 0.02
    #: Entries applied since the last snapshot that trigger an automatic one (0 = never).
    snapshot_threshold: int = 10_000
    #: Command bytes applied since the last snapshot that trigger an automatic one (0 = no
    #: byte bound): big batches would otherwise keep a large log in memory below the count.
    snapshot_threshold_bytes: int = 32 * 1024 * 1024
    snapshot_chunk_size: int = 1024 * 1024
    pre_vote: bool = True
    check_quorum: bool = True
    #: Upper bounds of one AppendEntries batch.
    max_entries_per_message: int = 512
    max_bytes_per_message: int = 1024 * 1024
    #: AppendEntries in flight per follower (pipelining) — for full messages (catch-up, bulk).
    max_inflight: int = 32
    #: AppendEntries in flight per follower when the next one would not be full (it would
    #: carry every pending entry): with one already out, entries that trickle in (forwarded
    #: writes, a group's share of the clients) wait for its answer and leave together,
    #: instead of a message each.
    #: Measured: 1.18–1.23× the ops per CPU-second through a forwarding node, direct
    #: writes unchanged (docs/performance.md). A heartbeat answer lends one slot.
    max_inflight_small: int = 1
    #: Bytes of proposals appended but not yet committed before new proposals are refused.
    max_uncommitted_bytes: int = 64 * 1024 * 1024
    #: Proposals awaiting their commit in ``RaftNode.propose`` before new ones are refused
    #: (``ProposalDroppedError``: retry later). Without a bound an open-loop flood filled the
    #: leader's event loop until its heartbeats went out late and it lost leadership.
    max_pending_proposals: int = 1024
    #: Per-RPC timeout the driver applies to outbound requests.
    rpc_timeout: float = 2.0
    #: Assumed bound on clock-rate drift between nodes for lease reads (fraction, e.g. 0.1 = 10%).
    lease_clock_drift: float = 0.1
    #: Committed entries handed to the state machine per driver iteration.
    max_apply_batch: int = 1024
    #: Run disk writes and fsyncs in a worker thread, so the event loop keeps accepting
    #: requests (bigger group commits) while the disk works. Simulations turn it off.
    persist_in_thread: bool = True
    #: ...except a Ready of at most this many entries (and no snapshot), written inline: a
    #: thread hand-off costs two wake-ups, more than a small write when nothing else is
    #: waiting for the loop (one write at a time). 0: always in the thread.
    persist_inline_max_entries: int = 0
    #: Readies handed to the persist thread and not yet durable. The thread writes all it has
    #: queued with one fsync, so Readies made during a sync share the next one; 1 = each
    #: Ready waits for the previous one's sync (no overlap).
    persist_max_inflight: int = 8
    #: Default timeout of ``propose`` when the caller gives none.
    propose_timeout: float = 10.0
    #: Let an idle group go quiet (``RaftCore``, "quiescence"): a leader whose followers hold
    #: its whole log and that saw no request for an election timeout sends one last heartbeat
    #: that stops their election timers, then none until something happens. Only safe to turn
    #: on where something wakes the group when a peer fails: a store does it (its
    #: ``StoreLiveness``), a lone ``RaftNode`` does not.
    quiesce: bool = False

    def ticks(self, seconds: float) -> int:
        return max(1, round(seconds / self.tick_interval))

    def validate(self) -> None:
        if not 0 < self.heartbeat_interval < self.election_timeout_min:
            raise ValueError("need 0 < heartbeat_interval < election_timeout_min")
        if self.election_timeout_max <= self.election_timeout_min:
            raise ValueError("need election_timeout_max > election_timeout_min")
        if self.tick_interval > self.heartbeat_interval:
            raise ValueError("tick_interval must not exceed heartbeat_interval")
        if self.snapshot_chunk_size <= 0 or self.max_inflight <= 0:
            raise ValueError("snapshot_chunk_size and max_inflight must be positive")
        if not 0 < self.max_inflight_small <= self.max_inflight:
            raise ValueError("max_inflight_small must be in 1..max_inflight")
        if self.persist_max_inflight <= 0:
            raise ValueError("persist_max_inflight must be positive")
        if self.max_pending_proposals <= 0:
            raise ValueError("max_pending_proposals must be positive")
