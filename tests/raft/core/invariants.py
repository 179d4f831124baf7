"""Raft's safety properties (Figure 3 of the paper), checked over a ``LockstepNetwork``.

Rule: ``SafetyChecker.check`` may be called after every single step; it remembers history
(leaders per term, every entry ever seen committed) so a property broken and then "repaired"
between two checks is still caught at the next one. Each failure names the property and the
nodes involved.

Properties:
- Election safety: at most one leader per term, ever; and no voter grants two candidates the
  same term, even across a crash.
- Log matching: two entries with the same index and term carry the same command, and so do the
  entries before them (checked inductively: the same (index, term) always follows the same
  previous term, across every log ever observed).
- Committed entries never change: every (index, term, command) any node ever counted as committed.
- State machine safety: every node's applied sequence is a prefix of one global sequence,
  made only of committed entries.
- Leader completeness: a leader holds every entry committed before its term began.
- Figure 8: a leader only ever moves its commit index to an entry of its own term.
- ReadIndex (``ReadCheck``): a confirmed read index covers everything committed anywhere
  before the read was requested.
- Local sanity: applied ≤ commit ≤ last index, none of them going back within an
  incarnation; the durable store agrees with the in-memory log up to what the core believes
  is stable; the configuration in force is the log's latest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftcache.raft.configuration import Configuration
from raftcache.raft.core import RaftCore, Role
from raftcache.raft.messages import EntryKind, RequestVoteRequest, RequestVoteResponse
from tests.raft.core.lockstep import LockstepNetwork
from tests.raft.core.member import Applied, Node

#: (term, kind, command) of a committed entry.
Committed = tuple[int, int, bytes]


class SafetyChecker:
    """Accumulates history across steps; call ``check(net)`` as often as you like."""

    def __init__(self) -> None:
        self.leader_of_term: dict[int, str] = {}
        self.committed: dict[int, Committed] = {}
        #: The highest term any node had when an index was first seen committed: every leader
        #: of a later term was elected afterwards and must hold that entry.
        self.committed_before_term: dict[int, int] = {}
        #: (index, term) → (previous term, kind, command), for every entry ever in any log.
        self.entries_seen: dict[tuple[int, int], tuple[int, int, bytes]] = {}
        self.applied: list[Applied] = []
        #: (voter, term) → the candidate it granted its vote to.
        self.votes: dict[tuple[str, int], str] = {}
        self._handled_seen = 0
        #: (node, incarnation) → (term, commit index, applied) at the last check.
        self.progress_seen: dict[tuple[str, int], tuple[int, int, int]] = {}
        #: (node, incarnation, term) → its commit index when it was first seen leading.
        self.commit_at_election: dict[tuple[str, int, int], int] = {}
        self.checks = 0

    def check(self, net: LockstepNetwork) -> None:
        self.checks += 1
        nodes = list(net.nodes.values())
        max_term = max(n.core.term for n in nodes)
        self._one_vote_per_term(net)
        for node in nodes:
            self._local(node)
            self._monotonic(node)
            self._election_safety(node)
            self._log_matching(node)
            self._committed_never_change(node, max_term)
            self._state_machine_safety(node)
        for node in nodes:
            if node.core.role is Role.LEADER:
                self._leader_completeness(node)
                self._commits_only_its_own_term(node)

    # ------------------------------------------------------------------ properties
    def _one_vote_per_term(self, net: LockstepNetwork) -> None:
        """Election safety's premise, across crashes: a voter grants one candidate per term."""
        for h in net.handled[self._handled_seen :]:
            req, resp = h.request, h.response
            if isinstance(req, RequestVoteRequest) and not req.pre_vote:
                assert isinstance(resp, RequestVoteResponse)
                if resp.vote_granted:
                    other = self.votes.setdefault((h.dst, req.term), req.candidate_id)
                    assert other == req.candidate_id, (
                        f"{h.dst} voted for {other} and {req.candidate_id} in term {req.term}"
                    )
        self._handled_seen = len(net.handled)

    def _monotonic(self, node: Node) -> None:
        """Within one incarnation, term, commit index and applied index never go back."""
        core = node.core
        now = (core.term, core.commit_index, core.applied)
        before = self.progress_seen.get((node.id, node.incarnation), (0, 0, 0))
        assert all(b <= n for b, n in zip(before, now, strict=True)), (
            f"{node.id}: (term, commit, applied) went back from {before} to {now}"
        )
        self.progress_seen[(node.id, node.incarnation)] = now

    def _local(self, node: Node) -> None:
        core = node.core
        last = core.log.last_index()
        assert core.log.snapshot_index <= core.applied <= core.commit_index <= last, (
            f"{node.id}: snapshot {core.log.snapshot_index} applied {core.applied} "
            f"commit {core.commit_index} last {last}"
        )
        assert len(node.applied) == core.applied, (
            f"{node.id}: state machine applied {len(node.applied)}, core says {core.applied}"
        )
        store = node.store
        stable = core.log.stable_index
        assert stable <= last, f"{node.id}: stable index {stable} beyond the log's end {last}"
        assert stable <= store.last_index() or stable == core.log.snapshot_index, (
            f"{node.id}: core believes {stable} is stable, the store ends at {store.last_index()}"
        )
        for i in range(max(core.log.snapshot_index, store.snapshot_index) + 1, stable + 1):
            assert store.term_at(i) == core.log.term_at(i), (
                f"{node.id}: stable entry {i} differs between store and memory"
            )
        # The configuration in force is the latest one in the log (entries take effect when
        # appended, and stop when truncated), else the snapshot's.
        configs = [e for e in core.log.entries if e.kind == EntryKind.CONFIG]
        expected = (
            Configuration.decode(configs[-1].command)
            if configs
            else core.config_for_snapshot(core.log.snapshot_index)
        )
        assert core.configuration == expected, (
            f"{node.id}: configuration {core.configuration} is not its log's {expected}"
        )
        if not core.has_unpersisted():
            assert (store.term, store.voted_for) == (core.term, core.voted_for), (
                f"{node.id}: persisted hard state {(store.term, store.voted_for)} "
                f"!= {(core.term, core.voted_for)}"
            )

    def _election_safety(self, node: Node) -> None:
        core = node.core
        if core.role is not Role.LEADER:
            return
        other = self.leader_of_term.setdefault(core.term, node.id)
        assert other == node.id, f"two leaders in term {core.term}: {other} and {node.id}"

    def _log_matching(self, node: Node) -> None:
        log = node.core.log
        prev_term = log.snapshot_term
        for e in log.entries:
            key = (e.index, e.term)
            seen = (prev_term, int(e.kind), e.command)
            old = self.entries_seen.setdefault(key, seen)
            assert old == seen, (
                f"{node.id}: log matching broken at {key}: {seen[:2]} vs earlier {old[:2]}"
            )
            prev_term = e.term

    def _committed_never_change(self, node: Node, max_term: int) -> None:
        core = node.core
        log = core.log
        if log.snapshot_index:
            known = self.committed.get(log.snapshot_index)
            assert known is None or known[0] == log.snapshot_term, (
                f"{node.id}: snapshot at {log.snapshot_index} has term {log.snapshot_term}, "
                f"committed term {known[0] if known else None}"
            )
        for i in range(log.snapshot_index + 1, core.commit_index + 1):
            e = log.entry(i)
            mine: Committed = (e.term, int(e.kind), e.command)
            known = self.committed.setdefault(i, mine)
            if known is mine:
                self.committed_before_term[i] = max_term
            assert known == mine, (
                f"{node.id}: committed entry {i} changed: term {known[0]} -> {mine[0]}"
            )

    def _state_machine_safety(self, node: Node) -> None:
        mine = node.applied
        n = min(len(mine), len(self.applied))
        assert mine[:n] == self.applied[:n], (
            f"{node.id}: applied sequence diverges: {_first_difference(mine, self.applied)}"
        )
        for entry in mine[n:]:
            index, term, kind, command = entry
            known = self.committed.get(index)
            assert known is None or known == (term, kind, command), (
                f"{node.id}: applied {index} (term {term}), committed term {known[0]}"
            )
            self.applied.append(entry)

    def _commits_only_its_own_term(self, node: Node) -> None:
        """§5.4.2: a leader commits by counting replicas only entries of its own term (older
        ones are committed indirectly, with them). So once its commit index moved during its
        leadership, it points at an entry of its term (Figure 8)."""
        core = node.core
        key = (node.id, node.incarnation, core.term)
        start = self.commit_at_election.setdefault(key, core.commit_index)
        if core.commit_index > start:
            assert _commit_term(core) == core.term, (
                f"leader {node.id} (term {core.term}) committed up to {core.commit_index}, an "
                f"entry of term {_commit_term(core)}, by counting replicas (Figure 8)"
            )

    def _leader_completeness(self, node: Node) -> None:
        core = node.core
        for index, before in self.committed_before_term.items():
            if before >= core.term or index < core.log.snapshot_index:
                continue
            term = self.committed[index][0]
            assert _term_at(core, index) == term, (
                f"leader {node.id} (term {core.term}) lacks entry {index} (term {term}) "
                f"committed before its term"
            )


def _commit_term(core: RaftCore) -> int | None:
    return core.log.term_at(core.commit_index)


def _term_at(core: RaftCore, index: int) -> int | None:
    return core.log.term_at(index)


def _first_difference(a: list[Applied], b: list[Applied]) -> str:
    for x, y in zip(a, b, strict=False):
        if x != y:
            return f"{x[:2]} vs {y[:2]}"
    return "length only"


@dataclass
class ReadCheck:
    """Linearizability of ReadIndex: a confirmed read index covers everything committed
    anywhere before the read was requested."""

    floors: dict[tuple[str, int, int], int] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    confirmed = 0

    def requested(self, node: str, incarnation: int, read_id: int, floor: int) -> None:
        self.floors[(node, incarnation, read_id)] = floor

    def check(self, net: LockstepNetwork) -> None:
        for node_id, node in net.nodes.items():
            start = self.seen.get(f"{node_id}/{node.incarnation}", 0)
            for read_id, index in node.reads[start:]:
                floor = self.floors.get((node_id, node.incarnation, read_id), 0)
                assert index >= floor, (
                    f"{node_id}: read {read_id} confirmed at {index}, but {floor} was "
                    "already committed when it was requested (stale read)"
                )
                self.confirmed += 1
            self.seen[f"{node_id}/{node.incarnation}"] = len(node.reads)
