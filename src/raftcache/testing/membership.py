"""Membership changes on a ``ProcessCluster``: remove a node, add it back (maybe brand new),
wait for the membership to settle, and check that every replica holds the same data.

Rule: a membership change is driven the way an operator would drive it — ``DELETE
/v1/members/{id}`` and ``POST /v1/members`` on the leader, the member's *real* URL in the body —
and retried until the cluster's own ``/v1/status`` says it is done, because under other faults
an answer may be lost (a timeout says nothing about the change) or refused (409: another change
in progress, a leader without a commit in its term yet). Each node still reaches the member
through its own proxy: the harness starts every node with ``--peer-address-override`` (the
mesh), which wins over the URL the configuration replicates — ``mesh_leaks`` checks that.

A node is wiped only while it is out of the membership and dead: a wiped member would have
forgotten its votes and log while still counting for quorum, which Raft does not survive (and
no operator should do). Added back with an empty data directory, it is a brand-new member: a
learner that catches up from the leader (by snapshot when the log was compacted), then a voter.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from raftcache.testing.harness import ProcessCluster

__all__ = [
    "MEMBERSHIP_NEMESES",
    "Injected",
    "ReadAttempt",
    "ReplicaCheck",
    "ReplicasUnsettled",
    "add_member",
    "compare_replicas",
    "inject_membership",
    "membership",
    "remove_member",
    "settle_membership",
]

MEMBERSHIP_NEMESES: tuple[str, ...] = ("remove", "remove-leader", "replace")

Heal = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class Injected:
    """A fault in force: what it is, and how to end it (``nemesis`` re-exports it).

    ``facts`` is what the nemesis observed of its own fault (JSON values: a measured clock
    rate, an exit code, whether a transfer happened), filled in as late as the heal; a
    ``"violation"`` entry is a contract the system broke, reported as a run finding.
    """

    name: str
    detail: str
    heal: Heal
    facts: dict[str, Any] = field(default_factory=dict)


async def membership(cluster: ProcessCluster) -> tuple[str, set[str], set[str]] | None:
    """The leader and its configuration (voters, learners), or None when no leader answers."""
    leader = await cluster.leader()
    if leader is None:
        return None
    status = await cluster.api.status(cluster.url(leader))
    if status is None or status.get("role") != "leader":
        return None
    voters = set(status.get("members", []))
    cluster.voter_sets_seen.add(frozenset(voters))
    return leader, voters, set(status.get("learners", []))


async def remove_member(cluster: ProcessCluster, node: str, timeout_s: float) -> bool:
    """Take ``node`` out of the configuration (voter or learner); True once the leader's
    configuration no longer names it, False if that did not happen within ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        seen = await membership(cluster)
        if seen is not None:
            leader, voters, learners = seen
            if node not in voters | learners:
                return True
            if len(voters - {node}) == 0:
                return False  # never remove the last voter
            left = max(1.0, deadline - loop.time())
            await cluster.api.remove_member(cluster.url(leader), node, timeout_s=min(10.0, left))
        await asyncio.sleep(0.2)
    return False


async def add_member(cluster: ProcessCluster, node: str, timeout_s: float) -> bool:
    """Add ``node`` back as a voter (the leader makes it a learner, waits until it caught up,
    then promotes it); True once the leader's configuration lists it as a voter."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        seen = await membership(cluster)
        if seen is not None:
            leader, voters, _ = seen
            if node in voters:
                return True
            left = max(1.0, deadline - loop.time())
            await cluster.api.add_member(
                cluster.url(leader), node, cluster.url(node), timeout_s=min(40.0, left)
            )
        await asyncio.sleep(0.2)
    return False


async def settle_membership(cluster: ProcessCluster, timeout_s: float) -> list[str]:
    """Make every node a voter again and wait until every node reports that configuration
    and the same leader; returns what is still wrong (empty when settled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    everyone = set(cluster.node_ids)
    problems = ["no leader"]
    while loop.time() < deadline:
        seen = await membership(cluster)
        if seen is None:
            problems = ["no leader"]
        else:
            _, voters, _ = seen
            missing = sorted(everyone - voters)
            for node in missing:
                await add_member(cluster, node, max(1.0, deadline - loop.time()))
            problems = _disagreements(await cluster.statuses(), everyone)
            if not problems and not missing:
                return []
        await asyncio.sleep(0.2)
    return problems


def _disagreements(
    statuses: Mapping[str, Mapping[str, object] | None], everyone: set[str]
) -> list[str]:
    problems: list[str] = []
    leaders = {s.get("leader") for s in statuses.values() if s is not None}
    if len(leaders) != 1 or None in leaders:
        problems.append(f"leaders reported: {sorted(map(str, leaders))}")
    for node, status in statuses.items():
        if status is None:
            problems.append(f"{node} does not answer")
            continue
        members = status.get("members")
        learners = status.get("learners")
        if not isinstance(members, list) or set(members) != everyone or learners:
            problems.append(f"{node} sees voters {members}, learners {learners}")
    return problems


@dataclass(frozen=True, slots=True)
class ReplicaCheck:
    """Every node's data at one applied index.

    Attributes:
        applied: The ``last_applied`` every node reported, before and after reading.
        keys: How many keys each replica holds.
        digests: Each node's digest of its sorted (key, value) pairs.
        differences: Up to ten keys whose values differ between replicas, with the values.
        attempts: How many times the applied indexes were asked before this reading held.
        read_s: How long reading every keyspace took, the last time.
    """

    applied: int
    keys: dict[str, int]
    digests: dict[str, str]
    differences: list[str]
    attempts: int = 1
    read_s: float = 0.0

    @property
    def identical(self) -> bool:
        return len(set(self.digests.values())) == 1 and not self.differences


@dataclass(frozen=True, slots=True)
class ReadAttempt:
    """One try of ``compare_replicas``.

    Attributes:
        before: Each node's ``last_applied`` before reading (None: it did not answer).
        after: The same after reading every keyspace; empty when the nodes did not agree
            before, so nothing was read.
        read_s: How long reading every keyspace took (0 when nothing was read).
        failed: Nodes whose keyspace could not be read.
    """

    before: dict[str, int | None]
    after: dict[str, int | None] = field(default_factory=dict)
    read_s: float = 0.0
    failed: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"applied {_indexes(self.before)}"
        if not self.after:
            return text + ", not the same on every node: not read"
        text += f" before and {_indexes(self.after)} after a {self.read_s:.1f} s reading"
        if self.failed:
            text += f" that failed on {', '.join(self.failed)}"
        return text


@dataclass(frozen=True, slots=True)
class ReplicasUnsettled:
    """``compare_replicas`` gave up: no common applied index held still while every keyspace
    was read, within ``timeout_s``.

    Attributes:
        timeout_s: How long it tried.
        attempts: How many times it asked every node for its applied index.
        readings: How many of those found one common index and read every keyspace.
        slowest_read_s: The longest of those readings (0 when there was none).
        last: The last attempts (at most ``LAST_ATTEMPTS``), oldest first.
    """

    timeout_s: float
    attempts: int
    readings: int
    slowest_read_s: float
    last: list[ReadAttempt]

    def describe(self) -> str:
        """The finding: what was tried, and the indexes each node showed at the end."""
        text = (
            f"the nodes did not reach one stable applied index within {self.timeout_s:g} s: "
            f"{self.attempts} attempts, {self.readings} readings of every keyspace"
        )
        if self.readings:
            text += f" (the slowest {self.slowest_read_s:.1f} s)"
        if self.last:
            text += "; the last attempts: " + "; ".join(a.describe() for a in self.last)
        return text


#: How many of its last attempts ``compare_replicas`` reports when it gives up.
LAST_ATTEMPTS = 3


async def compare_replicas(
    cluster: ProcessCluster, timeout_s: float, *, page: int = 1000
) -> ReplicaCheck | ReplicasUnsettled:
    """Read every node's whole keyspace locally (``consistency=stale``) once all of them
    applied the same index, and compare. Call it with no writes in flight; when the nodes did
    not reach a common, stable applied index within ``timeout_s``, what it saw instead.

    The applied index is read before and after the keyspace: if it moved (an expiry, a late
    entry), the reading is repeated, so the replicas are compared at one index. The reads pass
    ``touch=false``: a read served by the leader would otherwise refresh the keys' recency,
    which the leader proposes as a TOUCH entry every second — the comparison would move the
    very index it waits to hold still (a reading of 180 000 keys takes more than a second).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: deque[ReadAttempt] = deque(maxlen=LAST_ATTEMPTS)
    attempts = 0
    reads: list[float] = []  # how long each reading of every keyspace took
    while loop.time() < deadline:
        attempts += 1
        before = await _applied(cluster)
        common = _common(before)
        if common is None:
            last.append(ReadAttempt(before))
            await asyncio.sleep(0.2)
            continue
        started = loop.time()
        contents = {n: await _keyspace(cluster, n, page) for n in cluster.node_ids}
        read_s = round(loop.time() - started, 3)
        reads.append(read_s)
        after = await _applied(cluster)
        failed = sorted(n for n, c in contents.items() if c is None)
        if _common(after) != common or failed:
            last.append(ReadAttempt(before, after, read_s, failed))
            continue
        data = {n: c for n, c in contents.items() if c is not None}
        return ReplicaCheck(
            applied=common,
            keys={n: len(c) for n, c in data.items()},
            digests={n: _digest(c) for n, c in data.items()},
            differences=_differences(data),
            attempts=attempts,
            read_s=read_s,
        )
    return ReplicasUnsettled(timeout_s, attempts, len(reads), max(reads, default=0.0), list(last))


async def _applied(cluster: ProcessCluster) -> dict[str, int | None]:
    """Each node's ``last_applied`` (None: no answer, or no index in it)."""
    statuses = await cluster.statuses(timeout_s=2.0)
    applied: dict[str, int | None] = {}
    for node, status in statuses.items():
        value = status.get("last_applied") if status else None
        applied[node] = value if isinstance(value, int) else None
    return applied


def _common(applied: Mapping[str, int | None]) -> int | None:
    """The index every node reported, or None when they differ (or one did not answer)."""
    values = set(applied.values())
    if len(values) != 1:
        return None
    (value,) = values
    return value


def _indexes(applied: Mapping[str, int | None]) -> str:
    return "{" + ", ".join(f"{n}: {applied[n]}" for n in sorted(applied)) + "}"


async def _keyspace(cluster: ProcessCluster, node: str, page: int) -> dict[str, bytes] | None:
    url = cluster.url(node)
    listing = await cluster.api.list_keys(url, "", page=page, consistency="stale")
    if not listing.ok:
        return None
    keys: Sequence[str] = listing.value
    data: dict[str, bytes] = {}
    for start in range(0, len(keys), page):
        chunk = keys[start : start + page]
        values = await cluster.api.mget(url, chunk, consistency="stale", touch=False)
        if not values.ok:
            return None
        data.update({k: v for k, v in zip(chunk, values.value, strict=True) if v is not None})
    return data


def _digest(data: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for key in sorted(data):
        h.update(key.encode() + b"\0" + data[key] + b"\0")
    return h.hexdigest()[:16]


def _differences(data: dict[str, dict[str, bytes]], limit: int = 10) -> list[str]:
    found: list[str] = []
    for key in sorted(set().union(*data.values())):
        values = {n: d.get(key) for n, d in data.items()}
        if len(set(values.values())) > 1:
            found.append(f"{key}: {values}")
            if len(found) >= limit:
                break
    return found


# -- the nemeses ----------------------------------------------------------------------------

#: How long a nemesis waits for its removal before giving up on the window (the removal may
#: still happen later: the heal adds the node back whatever the answer was).
REMOVE_TIMEOUT_S = 6.0


#: How long a nemesis waits for a leader whose configuration names every node.
SETTLED_WAIT_S = 5.0


async def _settled(
    cluster: ProcessCluster, timeout_s: float
) -> tuple[str, set[str], set[str]] | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        seen = await membership(cluster)
        if seen is not None and seen[1] == set(cluster.node_ids):
            return seen
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(0.2)


async def inject_membership(
    name: str, cluster: ProcessCluster, rng: random.Random, add_timeout_s: float = 30.0
) -> Injected | None:
    """``remove`` (a random follower), ``remove-leader``, ``replace`` (a random node, removed,
    killed, its data wiped, restarted empty at once — then added back as a brand-new member).

    Applies only while every node is a voter (one change at a time, as operators do); the
    heal adds the node back and waits until it is a voter again (a learner that caught up).
    """
    seen = await _settled(cluster, SETTLED_WAIT_S)
    if seen is None:
        return None
    leader = seen[0]
    followers = [n for n in cluster.node_ids if n != leader]
    if name == "remove":
        node = rng.choice(followers)
    elif name == "remove-leader":
        node = leader
    elif name == "replace":
        node = rng.choice(cluster.node_ids)
    else:
        raise ValueError(f"unknown membership nemesis {name!r}")
    removed = await remove_member(cluster, node, REMOVE_TIMEOUT_S)
    detail = f"remove {node}" if removed else f"remove {node} (unconfirmed)"
    snapshot = False
    if name == "replace" and removed:
        # Only a node out of the configuration may lose its data (see the module docstring).
        await cluster.kill(node)
        cluster.nodes[node].wipe()
        cluster.restart(node)
        detail += ", wipe its data, restart it empty"
        # Half the time the leader compacts its log first: the newcomer then starts from a
        # snapshot (as it would in a long-lived cluster), otherwise from the whole log.
        snapshot = rng.random() < 0.5
        if snapshot:
            detail += ", snapshot"

    async def heal() -> None:
        if snapshot:
            seen = await membership(cluster)
            if seen is not None:
                await cluster.api.admin(cluster.url(seen[0]), "POST", "/v1/snapshot")
        await add_member(cluster, node, add_timeout_s)

    return Injected(name, detail + ", add it back", heal)
