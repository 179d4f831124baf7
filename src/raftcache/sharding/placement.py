"""Placement: the next step of each data group towards a balanced, fully replicated map.

Rule: placement is a pure function of the map and of which stores are down too long; it never
proposes a step that leaves a group without a live majority, never more than one step per
group, never a replica added on a host (its label, ``Store.host_label``) that holds a staying
replica of the group — but a leaving replica's replacement on a sibling store of its host when
no free host can take it, and a replacement on a host already holding two or more (a clash
placement did not make), neither raising the host's count of the group; it adds before it
removes a live replica (3 → 4 → 3 voters) and transfers leadership away from a replica before
removing it. Every driver computes the same plan from the same map (ties are broken by a hash
of group and store, then the store id, never by chance). See docs/sharding.md#placement.

The order of concerns, per group: finish a move in progress (promote the learner, or drop it if
its store went away); remove a dead voter (down too long: it adds no fault tolerance, so
removing it before its replacement is added costs none, and frees its host); shrink a group
above its replication (the replica on a store that is leaving first, then one of two sharing a
host, else on the fullest store; leadership handed off first — but never a live voter when
that leaves fewer than ``keep`` voters: the meta group's floor, where its replacement is added
first and, with none to add, the replica stays); replace a replica on a decommissioning store;
fill a group below its replication; repair a *host clash* — two staying replicas of a group on
one host, which placement never makes but a map records (the bootstrap places replicas before
the stores registered their labels; a store restarted with another label): a replica is added
on a host the group does not use, promoted, and then one of the pair removed, one
single-server step at a time like any move. With no free host the clash stays: the group keeps
its replicas (fewer replicas would tolerate fewer store failures, and no more host failures).

How many replicas a group aims for (``host_room``): RF, bounded by what it can hold without
raising any host's count — its staying replicas, one more per host it does not use and, on a
host that already holds two or more of its replicas (a clash the bootstrap made, one machine's
stores under one label), every store there: so a one-host cluster keeps RF replicas through
drains and dead stores, a leaving replica moving to a sibling store. A live voter is removed
only from a group above RF or above that bound (a drain shrinks a group only to what the
hosts left can hold: added for first, 3 → 4 → 3, whenever a replacement has room), never
because a clash made the hosts look fewer. Only when no group needs any of these
does placement rebalance: one replica from the fullest store to the emptiest that can take it,
then leaders, along a chain of transfers when no single transfer evens them out.
"""

from __future__ import annotations

import zlib
from collections import Counter, deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from raftcache.sharding.clustermap import ClusterMap, GroupPlacement, StoreState


class StepKind(StrEnum):
    """What one step does to a group's membership (or leadership)."""

    ADD = "add learner"
    PROMOTE = "promote"
    REMOVE = "remove"
    TRANSFER = "transfer leadership"


@dataclass(frozen=True)
class Step:
    """One membership or leadership change of one group: ``kind`` applied to ``store``."""

    group: int
    kind: StepKind
    store: str

    def __str__(self) -> str:
        return f"group {self.group}: {self.kind.value} {self.store}"


def eligible_stores(cmap: ClusterMap, down: Collection[str] = ()) -> list[str]:
    """Stores that may hold replicas: up, and not down longer than the configured time."""
    return [s.store_id for s in cmap.live_stores() if s.store_id not in down]


def effective_replication(cmap: ClusterMap, down: Collection[str] = ()) -> int:
    """The replicas a group can have: RF, bounded by the distinct hosts of eligible stores."""
    hosts = {cmap.stores[s].host_label for s in eligible_stores(cmap, down)}
    return min(cmap.replication, len(hosts))


def host_room(
    hosts: Mapping[str, str],
    staying: Collection[str],
    leaving: Collection[str],
    spare: Collection[str],
) -> dict[str, int]:
    """Host → how many replicas of one group placement may add there (hosts with none left
    out), given its ``staying`` replicas, its ``leaving`` ones (on stores decommissioning or
    down) and the ``spare`` stores that may take one (eligible, holding none of it);
    ``hosts``: store id → host label.

    On a host no staying replica uses, one — or, when several of the group's replicas there are
    leaving (both of a clashing pair drained at once), one per leaving replica: their moves to
    sibling stores leave the host no more replicas of the group than it had. On a host two or
    more staying replicas share (a clash the bootstrap made before the labels were known, or
    one machine's stores under one label), every spare store there: the group is on that host
    already, and keeping it at RF replicas tolerates more store failures (a leaving replica's
    move to a sibling store, a dead one's replacement). On a host one staying replica uses, one
    per leaving replica there when two or more are leaving (two drains of a clashing host at
    once: those moves to sibling stores leave the host no more replicas of the group than it
    had); one leaving replica beside one staying one is not counted — that is also how a single
    replica's move to a sibling looks once its replacement is in, and counting it would add a
    third. The driver's planner and the meta group's drain check both count by this."""
    used = Counter(hosts[s] for s in staying)
    gone = Counter(hosts[s] for s in leaving)
    spares = Counter(hosts[s] for s in spare)
    room = {}
    for host, n in spares.items():
        if used[host] == 0:
            room[host] = max(1, min(n, gone[host]))
        elif used[host] >= 2:
            room[host] = n
        elif gone[host] >= 2:
            room[host] = min(n, gone[host])
    return room


def plan(
    cmap: ClusterMap, down: Collection[str] = (), max_moves: int | None = None, keep: int = 0
) -> list[Step]:
    """The next step of every group that needs one (see the module docstring).

    Args:
        cmap: The map, with each group's membership as its leader last reported it.
        down: Stores down longer than the configured time: treated as leaving.
        max_moves: The most groups with a learner at once (default: one per eligible store).
        keep: A live voter is never removed when that leaves fewer voters than this, however
            far the eligible hosts fell: its replacement is added first (add before remove),
            and with none to add it stays. 0 for data groups (a drain shrinks them to the
            hosts left); the meta group's driver passes its floor (``driver.plan_meta``).
    """
    return _Planner(cmap, frozenset(down), max_moves, keep).run()


def drained(cmap: ClusterMap) -> list[str]:
    """Decommissioning stores that hold no replica any more: ready to be marked removed."""
    counts = cmap.replica_counts()
    return [
        s.store_id
        for _, s in sorted(cmap.stores.items())
        if s.state is StoreState.DECOMMISSIONING and counts[s.store_id] == 0
    ]


def apply_step(cmap: ClusterMap, step: Step) -> ClusterMap:
    """The map after ``step`` succeeded (one version higher). Removing a group's leader leaves
    its leader unknown (None) until the group reports its next one."""
    p = cmap.placement(step.group)
    voters, learners, leader = set(p.voters), set(p.learners), p.leader
    if step.kind is StepKind.ADD:
        learners.add(step.store)
    elif step.kind is StepKind.PROMOTE:
        learners.discard(step.store)
        voters.add(step.store)
    elif step.kind is StepKind.REMOVE:
        voters.discard(step.store)
        learners.discard(step.store)
        leader = None if leader == step.store else leader
    else:
        leader = step.store
    placement = GroupPlacement(step.group, tuple(sorted(voters)), tuple(sorted(learners)), leader)
    return cmap.with_placement(placement)


def with_leader(cmap: ClusterMap, group: int, leader: str | None) -> ClusterMap:
    """The map with ``group``'s last seen leader set (one version higher)."""
    return cmap.with_placement(replace(cmap.placement(group), leader=leader))


def _tie(group: int, store: str) -> int:
    """Spreads ties differently per group; callers add the store id after it, because two
    ids can collide for every group (CRC is linear)."""
    return zlib.crc32(f"{group}/{store}".encode())


def _live_majority(voters: tuple[str, ...], alive: set[str]) -> bool:
    return 2 * sum(v in alive for v in voters) > len(voters)


class _Planner:
    def __init__(
        self, cmap: ClusterMap, down: frozenset[str], max_moves: int | None, keep: int
    ) -> None:
        self.cmap = cmap
        self.keep = keep
        self.down = down
        self.hosts = {s: st.host_label for s, st in cmap.stores.items()}
        self.eligible = set(eligible_stores(cmap, down))
        self.alive = {  # may still act (hand leadership over): up or decommissioning, not down
            s for s, st in cmap.stores.items() if st.state is not StoreState.REMOVED
        } - down
        counts = cmap.replica_counts()
        self.counts = {s: counts[s] for s in self.eligible}
        self.leads = cmap.leader_counts()
        self.moving = {s for p in cmap.placements for s in p.learners}  # stores being filled
        moves = sum(1 for p in cmap.placements if p.learners)
        limit = len(self.eligible) if max_moves is None else max_moves
        self.move_budget = max(0, limit - moves)
        self.steps: list[Step] = []

    def run(self) -> list[Step]:
        if not self.eligible:
            return []
        for p in self.cmap.placements:
            self._repair(p)
        if not self.steps:  # nothing to repair (or nothing repairable): balance
            self._rebalance_replicas() or self._rebalance_leaders()
        return self.steps

    # --- one group: repair ---------------------------------------------------------------------

    def _movable(self, p: GroupPlacement) -> bool:
        """A group a rebalance may touch: no move in progress, every voter alive."""
        return not p.learners and all(v in self.alive for v in p.voters)

    def _repair(self, p: GroupPlacement) -> None:
        if p.learners:
            learner = p.learners[0]
            kind = StepKind.PROMOTE if learner in self.eligible else StepKind.REMOVE
            self.steps.append(Step(p.group, kind, learner))
            return
        dead = [v for v in p.voters if v not in self.alive]
        if dead:
            # A dead voter goes first: it adds nothing to the group's fault tolerance, so
            # removing it before adding its replacement costs none, and it frees its host for
            # a store there. Only while the live voters are a majority (or nothing commits).
            if _live_majority(p.voters, self.alive):
                victim = min(dead, key=lambda v: (_tie(p.group, v), v))
                self.steps.append(Step(p.group, StepKind.REMOVE, victim))
            return
        staying = [v for v in p.voters if v in self.eligible]
        leaving = [v for v in p.voters if v not in self.eligible]
        room = self._room(p)
        want = min(self.cmap.replication, len(staying) + sum(room.values()))
        gone = Counter(self.hosts[v] for v in leaving)
        pair = any(n >= 2 and h in room for h, n in gone.items())  # a drained clashing pair
        if (
            leaving
            and len(staying) < want
            and (len(p.voters) <= self.cmap.replication or pair)
            and self._target(p, False) is not None
        ):
            # A replacement in before a leaving voter goes (RF → RF + 1 → RF); past RF + 1
            # only for a clashing pair drained at once, whose host would otherwise lose room
            # for its second replica while the first one's move is under way.
            self._grow(p)
        elif len(p.voters) > self.cmap.replication or (leaving and len(p.voters) > want):
            self._shrink(p)  # above RF, or a drain left hosts for fewer replicas
        elif leaving or len(p.voters) < want:
            self._grow(p)
        elif self.cmap.shared_hosts(p, self.down):
            self._grow(p, free_only=True)  # a host clash: repaired only onto a free host

    def _room(self, p: GroupPlacement) -> dict[str, int]:
        return host_room(
            self.hosts,
            [v for v in p.voters if v in self.eligible],
            [v for v in p.voters if v not in self.eligible],
            [s for s in self.eligible if s not in p.replicas],
        )

    def _shrink(self, p: GroupPlacement) -> None:
        """One live voter too many (after a promote, or RF fell): drop the one on a leaving
        store first, else on the fullest; hand leadership away from it first. Below the
        ``keep`` floor, a replacement is added instead (the shrink follows its promote)."""
        if len(p.voters) - 1 < self.keep:
            if any(v not in self.eligible for v in p.voters):
                self._grow(p)
            return

        clashing = {s for ss in self.cmap.shared_hosts(p, self.down).values() for s in ss}

        def weight(v: str) -> tuple[bool, bool, bool, int, int, str]:
            # A leaving voter first, then one sharing its host with another (not the leader
            # of the pair when the other will do), then the fullest store.
            shared = v in clashing
            return (
                v in self.eligible,
                not shared,
                shared and v == p.leader,
                -self.counts.get(v, 0),
                _tie(p.group, v),
                v,
            )

        victim = min(p.voters, key=weight)
        if victim == p.leader:
            heirs = [v for v in p.voters if v != victim and v in self.eligible]
            if heirs:
                heir = min(heirs, key=lambda v: (self.leads[v], _tie(p.group, v), v))
                self.steps.append(Step(p.group, StepKind.TRANSFER, heir))
                return
        self.steps.append(Step(p.group, StepKind.REMOVE, victim))

    def _grow(self, p: GroupPlacement, free_only: bool = False) -> None:
        if self.move_budget <= 0:
            return
        target = self._target(p, free_only)
        if target is None:
            return
        self.move_budget -= 1
        self.moving.add(target)
        self.steps.append(Step(p.group, StepKind.ADD, target))

    def _target(self, p: GroupPlacement, free_only: bool) -> str | None:
        """The emptiest eligible store not being filled on a host with room for the group
        (``host_room``), preferring a host no staying replica of it uses; None while the
        preferred hosts' stores are being filled (they are waited for, not passed over). A
        replica on a leaving store does not hold its host: its replacement may share it for
        the length of the move. ``free_only``: a host the group does not use, or none."""
        room = self._room(p)
        used = {self.hosts[r] for r in p.voters if r in self.eligible}
        allowed = [
            s
            for s in self.eligible
            if s not in p.replicas
            and self.hosts[s] in room
            and not (free_only and self.hosts[s] in used)
        ]
        if not allowed:
            return None
        best = min(self.hosts[s] in used for s in allowed)
        candidates = [
            s for s in allowed if (self.hosts[s] in used) == best and s not in self.moving
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda s: (self.counts[s], _tie(p.group, s), s))

    # --- the whole map: balance ----------------------------------------------------------------

    def _rebalance_replicas(self) -> bool:
        """One replica from a fuller store to an emptier one (two or more apart) that can take
        it; the promote and remove follow in later plans."""
        if self.move_budget <= 0:
            return False
        stores = sorted(self.eligible, key=lambda s: (-self.counts[s], s))
        for full in stores:
            for empty in reversed(stores):
                if self.counts[full] - self.counts[empty] < 2:
                    break
                for p in sorted(self.cmap.placements, key=lambda p: (_tie(p.group, full), p.group)):
                    if full not in p.voters or empty in p.replicas or not self._movable(p):
                        continue
                    if self.hosts[empty] in {self.hosts[r] for r in p.replicas}:
                        continue
                    self.steps.append(Step(p.group, StepKind.ADD, empty))
                    return True
        return False

    def _rebalance_leaders(self) -> bool:
        """Even out leaders along the shortest chain of transfers from a store leading two
        or more groups more than some other store (each link hands one group to a voter on the
        next store, so only the chain's two ends change their counts)."""
        leads = {s: self.leads[s] for s in self.eligible}
        by_leader: dict[str, list[GroupPlacement]] = {}
        for p in self.cmap.placements:
            if p.leader in self.eligible:
                by_leader.setdefault(p.leader, []).append(p)
        for source in sorted(leads, key=lambda s: (-leads[s], s)):
            chain = self._chain(source, leads, by_leader)
            if chain:
                self.steps.extend(chain)
                return True
        return False

    def _chain(
        self, source: str, leads: dict[str, int], by_leader: dict[str, list[GroupPlacement]]
    ) -> list[Step]:
        via: dict[str, tuple[str, Step] | None] = {source: None}
        queue = deque([source])
        while queue:
            here = queue.popleft()
            for p in sorted(by_leader.get(here, []), key=lambda p: p.group):
                for voter in p.voters:
                    if voter in via or voter not in self.eligible:
                        continue
                    via[voter] = (here, Step(p.group, StepKind.TRANSFER, voter))
                    if leads[voter] <= leads[source] - 2:
                        return _unwind(via, voter)
                    queue.append(voter)
        return []


def _unwind(via: dict[str, tuple[str, Step] | None], end: str) -> list[Step]:
    steps: list[Step] = []
    link = via[end]
    while link is not None:
        here, step = link
        steps.append(step)
        link = via[here]
    return list(reversed(steps))


__all__ = [
    "Step",
    "StepKind",
    "apply_step",
    "drained",
    "effective_replication",
    "eligible_stores",
    "host_room",
    "plan",
    "with_leader",
]
