"""The placement driver: moves replicas between running stores until placement has no step.

Rule: the driver never decides from a map of its own. Each round it *observes* every store
(``GET /raft/store/groups``: the replicas it hosts, with each group's configuration as its
replicas see it), builds the ``ClusterMap`` the groups' committed configurations say
(invariant 2: the groups are the truth), asks ``sharding.placement.plan`` for the next step of
each group, and carries out one step per group — then observes again. A step is carried out
over the stores' HTTP APIs, each part idempotent, so a driver that crashes, or is killed, and
runs again simply continues:

- *add* ``s``: ``s`` creates an empty replica (``POST /raft/store/replicas``, its next
  incarnation; a retry returns the one it holds), then the group's leader adds it as a learner,
  catches it up and promotes it (``POST /v1/members?group=``);
- *promote* ``s``: the leader's ``add_member`` again (it skips what is done);
- *transfer* to ``s``: ``POST /v1/leader/transfer?group=`` naming ``s``'s replica;
- *remove* ``s``: the leader removes ``s``'s replica from the configuration
  (``DELETE /v1/members/{replica}?group=``); only once the leader shows a *committed*
  configuration without it (commit index ≥ configuration index) does ``s`` delete its data
  (``DELETE /raft/store/replicas/{group}?replica=&config_index=``: that incarnation only, and
  the store refuses when the replica's own configuration names it at that index or later) —
  invariant 6.

Membership requests carry the configuration index they were planned from, and the leader
refuses (409) a change planned from another (invariant 3: a stale driver — a second one, or
one acting on an old observation — never undoes a newer step). Replicas a store still holds
that the group's committed configuration no longer names (removed while the store was down)
are deleted at the start of a round. After each step every store is told where the group
lives now, its leader first (``PUT /raft/store/placement/{group}``), so that every store
prefers that leader (``raftcache.store.balance``) instead of undoing the driver's transfers.
A store that does not answer for ``down_after_s`` counts as
down (placement then replaces its replicas, removing a dead voter only while the group keeps a
live majority); ``drain`` marks stores to empty (decommissioning). Safety never rests on the
driver: every membership change is the group's own single-server change, refused by a leader
with one already in flight.

The meta group's own replicas (``meta_replication`` > 0: the driver the meta leader runs)
move by the same steps, planned by the same ``plan`` over a one-group map of the meta group's
placement with the same stores, host labels and down stores: filled up to
``meta_replication``, a dead voter removed while the meta group keeps a live majority, a
replica on a decommissioning store replaced — and, unlike a data group, never a live voter
removed while that leaves fewer than three (``plan_meta``): its replacement is added first,
and with no store to take it the replica stays on its draining store, where a data group
would shrink to the hosts left. Its membership changes go to the meta leader's
``/raft/meta/members`` and ``/raft/meta/leader/transfer`` (cluster token) instead of the
client API's ``?group=`` routes. The driver runs *on* the meta leader, so the step that
matters is removing the leader's own replica: ``plan`` never removes a replica that leads (it
transfers leadership first), the driver refuses such a step, and the meta leader's route
refuses it too (409) — the removal is then carried out by the next meta leader's driver, a
removal of another store's replica like any other (docs/sharding.md, "The meta group's
replicas move").

On a cluster bootstrapped before the meta group an operator runs this driver instead:
``raftcache store rebalance`` / ``raftcache store drain`` (data groups only).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from raftcache.network.groups import store_of
from raftcache.sharding.clustermap import ClusterMap, GroupPlacement, Store, StoreState
from raftcache.sharding.placement import Step, StepKind, plan
from raftcache.store.meta import MAX_META_VOTERS
from raftcache.store.store import META_GROUP, group_id

log = logging.getLogger("raftcache.store.driver")


def plan_meta(meta: ClusterMap, down: Collection[str] = ()) -> list[Step]:
    """The meta group's next step from its one-group map (``PlacementDriver.meta_map``):
    ``plan``'s, but no live voter is removed when that leaves fewer than
    ``min(MAX_META_VOTERS, its replication)`` — the map must keep the quorum every join, move
    and drain needs, even while two drains or a dead store shrink the hosts that could take
    its replicas."""
    return plan(meta, down=down, keep=min(MAX_META_VOTERS, meta.replication))


class DriverError(RuntimeError):
    """A step could not be carried out (the next round observes and tries again)."""


@dataclass
class GroupView:
    """One group as the driver observed it: its leader's view when a leader answered."""

    group: str
    leader_store: str | None = None
    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()
    term: int = -1
    commit_index: int = 0
    config_index: int = 0
    #: store id → the id of its replica of the group (from the replicas' own reports).
    replicas: dict[str, str] = field(default_factory=dict)


@dataclass
class Observation:
    """What one round saw: the stores that answered and every group's view."""

    answered: set[str]
    groups: dict[str, GroupView]
    group_count: int


#: Sends one request: (method, store id, path, JSON body or None) → (status, parsed body).
Request = Callable[[str, str, str, Any], Awaitable[tuple[int, Any]]]


class PlacementDriver:
    """Observe, plan, step (see the module docstring).

    Args:
        urls: store id → base URL of every store of the cluster.
        groups: G, the cluster's number of data groups.
        replication: the replication factor placement aims for.
        request: sends one HTTP request (``http_requester`` in production; tests may wrap it).
        clock: monotonic seconds.
        drain: stores to empty (decommissioning).
        down_after_s: a store silent this long counts as down.
        hosts: store id → host label (placement puts no second replica of a group on a
            host, and repairs a clash it finds); a store not named counts as its own host.
        meta_replication: the replicas the meta group aims for; 0 (the operator's driver):
            the meta group is neither observed nor moved.
    """

    def __init__(
        self,
        urls: Mapping[str, str],
        *,
        groups: int,
        replication: int,
        request: Request,
        clock: Callable[[], float],
        drain: Collection[str] = (),
        down_after_s: float = 30.0,
        hosts: Mapping[str, str] | None = None,
        meta_replication: int = 0,
    ) -> None:
        self.urls = dict(urls)
        self.meta_replication = meta_replication
        self.hosts = dict(hosts or {})
        #: Group id → its stores as the cluster map last recorded them: what a group whose
        #: replicas all went silent counts as in the balance (the meta agent sets it).
        self.known: dict[str, tuple[str, ...]] = {}
        #: The last round's observation, taken again after its steps (the map the meta group
        #: records from it).
        self.last_seen: Observation | None = None
        self.groups = groups
        self.replication = replication
        self._request = request
        self._clock = clock
        self.drain = set(drain)
        self._down_after_s = down_after_s
        self._silent_since: dict[str, float] = {}
        #: The host clashes last logged (``cluster_map``): each logged once, when it appears.
        self._clashes: set[str] = set()
        self.steps_done: list[Step] = []
        #: The meta group's steps among them (their ``group`` number means nothing).
        self.meta_steps_done: list[Step] = []

    async def observe(self) -> Observation:
        answers = await asyncio.gather(
            *(self._request("GET", s, "/raft/store/groups", None) for s in self.urls),
            return_exceptions=True,
        )
        now = self._clock()
        answered: set[str] = set()
        views = {group_id(g): GroupView(group_id(g)) for g in range(self.groups)}
        if self.meta_replication:
            views[META_GROUP] = GroupView(META_GROUP)
        # A group no leader answered for: its members as the newest of its other replicas'
        # reports has them — enough to count it in the balance, never to step it.
        reported: dict[str, tuple[int, tuple[str, ...], tuple[str, ...]]] = {}
        for store, answer in zip(self.urls, answers, strict=True):
            if isinstance(answer, BaseException) or answer[0] != 200:
                self._silent_since.setdefault(store, now)
                continue
            self._silent_since.pop(store, None)
            answered.add(store)
            for entry in answer[1].get("groups", ()):
                view = views.get(entry.get("group"))
                if view is None:
                    continue
                view.replicas[store] = entry["replica"]
                term = entry.get("term", -1)
                if entry.get("role") == "leader" and term > view.term:
                    view.leader_store = store
                    view.term = entry["term"]
                    view.voters = tuple(entry.get("voters", ()))
                    view.learners = tuple(entry.get("learners", ()))
                    view.commit_index = entry.get("commit_index", 0)
                    view.config_index = entry.get("config_index", 0)
                elif entry.get("voters") and term > reported.get(view.group, (-2,))[0]:
                    voters = tuple(entry.get("voters", ()))
                    reported[view.group] = (term, voters, tuple(entry.get("learners", ())))
        for gid, view in views.items():
            if view.leader_store is None and gid in reported:
                _, view.voters, view.learners = reported[gid]
            elif view.leader_store is None and gid in self.known:
                view.voters = self.known[gid]  # its stores as the map last recorded them
        return Observation(answered, views, self.groups)

    def down(self) -> set[str]:
        now = self._clock()
        return {s for s, t in self._silent_since.items() if now - t >= self._down_after_s}

    def cluster_map(self, seen: Observation) -> ClusterMap:
        """The map the groups' configurations say, with the stores' host labels — always:
        where the groups put two replicas of one on a host (the bootstrap placed them before
        the stores registered their labels, a store restarted with another label), placement
        repairs it by a move (``sharding.placement``). Each clash is logged once, when it
        first appears."""
        cmap = self._cluster_map(seen, self.hosts)
        shown = {
            f"{group_id(p.group)}: {', '.join(stores)} on {host!r}"
            for p in cmap.placements
            for host, stores in cmap.shared_hosts(p).items()
        }
        for clash in sorted(shown - self._clashes):
            log.warning("replicas share a host", extra={"clash": clash})
        self._clashes = shown
        return cmap

    def meta_map(self, seen: Observation) -> ClusterMap | None:
        """The meta group's placement as a one-group map over the same stores (None when
        the driver does not move it): what ``plan`` steps it from."""
        view = seen.groups.get(META_GROUP)
        if view is None or not view.voters:
            return None
        voters = tuple(sorted({store_of(v) for v in view.voters}))
        learners = tuple(sorted({store_of(v) for v in view.learners} - set(voters)))
        leader = view.leader_store if view.leader_store in voters else None
        placement = (GroupPlacement(0, voters, learners, leader),)
        stores = self._stores(seen, self.hosts)  # as ``cluster_map``: labels, always
        return ClusterMap(1, 1, self.meta_replication, stores, placement)

    def _stores(self, seen: Observation, hosts: Mapping[str, str]) -> dict[str, Store]:
        # ``host`` is the store's id (so the map never refuses a clash: the groups' placement
        # is the truth, invariant 2); placement reads the label (``Store.host_label``).
        stores = {
            s: Store(s, s, self.urls[s], label=hosts.get(s, s),
                     state=StoreState.DECOMMISSIONING if s in self.drain else StoreState.UP)
            for s in self.urls
        }  # fmt: skip
        # A store a configuration names but the driver was not given (removed from the map
        # while a replica was still being added there): drained like a decommissioning one,
        # never a reason to stop planning.
        for view in seen.groups.values():
            for member in (*view.voters, *view.learners):
                s = store_of(member)
                if s not in stores:
                    stores[s] = Store(s, s, "", state=StoreState.DECOMMISSIONING)
        return stores

    def _cluster_map(self, seen: Observation, hosts: Mapping[str, str]) -> ClusterMap:
        stores = self._stores(seen, hosts)
        placements = []
        for g in range(self.groups):
            view = seen.groups[group_id(g)]
            placements.append(
                GroupPlacement(
                    g,
                    tuple(sorted(store_of(v) for v in view.voters)),
                    tuple(sorted(store_of(v) for v in view.learners)),
                    view.leader_store,
                )
            )
        return ClusterMap(1, self.groups, self.replication, stores, tuple(placements))

    async def round(self) -> list[Step]:
        """One round: observe, plan, carry out one step per group. Nothing is planned until
        every group's leader answered (a map needs each group's configuration). Returns the
        steps planned."""
        seen = await self.observe()
        self.last_seen = seen
        if not all(v.voters for v in seen.groups.values()):
            return []  # a group nobody reported nor recorded: no map can be built; wait
        await self._delete_orphans(seen)
        planned = self._plan(seen)
        results = await asyncio.gather(
            *(self._carry_out(gid, step, seen) for gid, step in planned), return_exceptions=True
        )
        for (gid, step), result in zip(planned, results, strict=True):
            shown = f"meta group: {step.kind.value} {step.store}" if gid == META_GROUP else step
            shown = str(shown)
            if isinstance(result, BaseException):
                log.warning("placement step failed", extra={"step": shown, "why": repr(result)})
            else:
                self.steps_done.append(step)
                if gid == META_GROUP:
                    self.meta_steps_done.append(step)
                log.info("placement step done", extra={"step": shown})
        if planned:  # what the groups are after the steps (what every store was just told)
            self.last_seen = await self.observe()
        return [step for _, step in planned]

    def _plan(self, seen: Observation) -> list[tuple[str, Step]]:
        """The steps to carry out now, each with its group's id: the data groups', then the
        meta group's (its own one-group plan)."""
        down = self.down()
        planned = [(group_id(s.group), s) for s in plan(self.cluster_map(seen), down=down)]
        meta = self.meta_map(seen)
        if meta is not None:
            leader = seen.groups[META_GROUP].leader_store
            planned += [
                (META_GROUP, s)
                for s in plan_meta(meta, down)
                # Never the meta leader's own replica (the driver runs there): ``plan``
                # transfers leadership first; this only guards the rule.
                if not (s.kind is StepKind.REMOVE and s.store == leader)
            ]
        # Only a group whose leader answered is stepped (its configuration is the truth:
        # invariant 2); one without — it lost its majority, or is electing — still counts
        # in the balance but freezes no other group's repair. A store that did not answer
        # this round gets nothing (no replica, no leadership) until it does: it may be dead,
        # and is not yet counted down.
        return [
            (gid, step)
            for gid, step in planned
            if seen.groups[gid].leader_store is not None
            and (step.kind is StepKind.REMOVE or step.store in seen.answered)
        ]

    async def run(self, timeout_s: float, pause_s: float = 0.5) -> bool:
        """Rounds until placement has no step (True) or ``timeout_s`` passes (False)."""
        deadline = self._clock() + timeout_s
        while self._clock() < deadline:
            seen = await self.observe()
            led = seen.answered and all(v.leader_store for v in seen.groups.values())
            if led and not self._plan(seen):
                return True
            await self.round()
            await asyncio.sleep(pause_s)
        return False

    async def _carry_out(self, gid: str, step: Step, seen: Observation) -> None:
        view = seen.groups[gid]
        leader = view.leader_store
        assert leader is not None
        members, transfer, query = _membership_paths(gid)
        if step.kind in (StepKind.ADD, StepKind.PROMOTE):
            replica = view.replicas.get(step.store)
            if replica is None or step.kind is StepKind.ADD:
                status, body = await self._request(
                    "POST", step.store, "/raft/store/replicas",
                    {"group": gid, "voters": list(view.voters)},
                )  # fmt: skip
                self._check(status, body, f"{step.store} creating a replica of {gid}")
                replica = body["replica"]
            # Planned from this configuration (invariant 3): a promote too, so that a stale
            # one never re-adds a learner a newer step removed.
            change = {
                "id": replica,
                "url": self.urls[step.store],
                "config_index": view.config_index,
            }
            status, body = await self._request("POST", leader, members + query, change)
            self._check(status, body, f"adding {replica} to {gid}")
        elif step.kind is StepKind.TRANSFER:
            target = next((v for v in view.voters if store_of(v) == step.store), None)
            if target is None:
                raise DriverError(f"{step.store} holds no voter of {gid}")
            status, body = await self._request("POST", leader, transfer + query, {"to": target})
            self._check(status, body, f"transferring {gid} to {target}")
        else:  # REMOVE
            member = next(
                (v for v in (*view.voters, *view.learners) if store_of(v) == step.store), None
            )
            if member is None:
                raise DriverError(f"{step.store} holds no member of {gid}")
            if step.store == leader and gid == META_GROUP:
                raise DriverError(f"{member} leads the meta group: never removed, transferred")
            planned = f"config_index={view.config_index}"  # invariant 3
            path = f"{members}/{quote(member, safe='')}{query}{'&' if query else '?'}{planned}"
            status, body = await self._request("DELETE", leader, path, None)
            self._check(status, body, f"removing {member} from {gid}")
            removed_at = await self._committed_without(gid, leader, member)
            if step.store not in self.down():
                status, body = await self._request(
                    "DELETE", step.store,
                    f"/raft/store/replicas/{gid}?replica={quote(member, safe='')}"
                    f"&config_index={removed_at}", None,
                )  # fmt: skip
                if status not in (200, 404):  # 404: already gone (a retried round)
                    self._check(status, body, f"{step.store} deleting {member}")
        await self._tell_placement(gid)

    async def _committed_without(self, gid: str, leader: str, member: str) -> int:
        """Wait until ``leader`` shows a committed configuration of ``gid`` without
        ``member`` (invariant 6: only then may its data go); that configuration's index."""
        for _ in range(100):
            found = await self._removal_committed(gid, leader, member)
            if found is not None:
                return found
            await asyncio.sleep(0.1)
        raise DriverError(f"the removal of {member} from {gid} was not seen committed")

    async def _removal_committed(self, gid: str, leader: str, member: str) -> int | None:
        """The index of ``leader``'s committed configuration of ``gid``, when it leads, has
        committed it and it does not name ``member``; None otherwise."""
        status, body = await self._request("GET", leader, "/raft/store/groups", None)
        if status != 200:
            return None
        entry = next((e for e in body.get("groups", ()) if e["group"] == gid), None)
        if entry is None or entry.get("role") != "leader":
            return None
        members = {*entry.get("voters", ()), *entry.get("learners", ())}
        if member in members or entry["commit_index"] < entry["config_index"]:
            return None
        return int(entry["config_index"])

    async def _delete_orphans(self, seen: Observation) -> None:
        """Delete replicas that stores still hold but their group's committed configuration
        no longer names (removed while their store was down, or created for an add that
        never happened): invariant 6 holds — the leader shows the configuration committed."""
        for gid, view in seen.groups.items():
            if view.leader_store is None or view.commit_index < view.config_index:
                continue
            members = {*view.voters, *view.learners}
            for store, replica in view.replicas.items():
                if replica in members:
                    continue
                # Read the leader again now: the observation may be older than an add.
                removed_at = await self._removal_committed(gid, view.leader_store, replica)
                if removed_at is None:
                    continue
                status, _ = await self._request(
                    "DELETE", store,
                    f"/raft/store/replicas/{gid}?replica={quote(replica, safe='')}"
                    f"&config_index={removed_at}", None,
                )  # fmt: skip
                log.info(
                    "orphan replica deleted" if status == 200 else "orphan replica kept",
                    extra={"group": gid, "replica": replica, "status": status},
                )

    async def _tell_placement(self, gid: str) -> None:
        seen = await self.observe()
        view = seen.groups[gid]
        # The leader's store first: every store then prefers the same leader
        # (``raftcache.store.balance``), the one placement chose.
        voters = sorted({store_of(m) for m in view.voters} - {view.leader_store or ""})
        learners = sorted({store_of(m) for m in view.learners} - set(voters))
        stores = [*([view.leader_store] if view.leader_store else []), *voters, *learners]
        if not stores:
            return
        await asyncio.gather(
            *(
                self._request("PUT", s, f"/raft/store/placement/{gid}", {"stores": stores})
                for s in seen.answered
            ),
            return_exceptions=True,
        )

    @staticmethod
    def _check(status: int, body: Any, what: str) -> None:
        if status != 200:
            error = body.get("error") if isinstance(body, dict) else body
            raise DriverError(f"{what}: HTTP {status} {error}")


def _membership_paths(gid: str) -> tuple[str, str, str]:
    """(members path, leader transfer path, query) of ``gid``'s membership changes: the
    client API's routes of a data group, the meta leader's own routes of the meta group."""
    if gid == META_GROUP:
        return "/raft/meta/members", "/raft/meta/leader/transfer", ""
    return "/v1/members", "/v1/leader/transfer", f"?group={gid}"


def http_requester(
    session: aiohttp.ClientSession,
    urls: Mapping[str, str],
    *,
    client_token: str | None,
    cluster_token: str | None,
    timeout_s: float = 60.0,
) -> Request:
    """``Request`` over ``session``: the cluster token on ``/raft/`` paths, the client token
    on the client API."""

    async def request(method: str, store: str, path: str, body: Any) -> tuple[int, Any]:
        token = cluster_token if path.startswith("/raft/") else client_token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with session.request(
            method,
            urls[store].rstrip("/") + path,
            json=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as answer:
            try:
                parsed = await answer.json(content_type=None)
            except ValueError:
                parsed = {"error": (await answer.text())[:200]}
            return answer.status, parsed

    return request


class LazyRequester:
    """``Request`` over a client session of its own, opened on first use (inside the running
    loop) and closed by ``close``: for a store's long-lived meta agent."""

    def __init__(
        self,
        urls: Mapping[str, str],
        *,
        client_token: str | None,
        cluster_token: str | None,
        ssl_context: Any = None,
        timeout_s: float = 5.0,
    ) -> None:
        self._urls = urls
        self._tokens = (client_token, cluster_token)
        self._ssl = ssl_context
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._request: Request | None = None
        self._closed = False

    async def __call__(self, method: str, store: str, path: str, body: Any) -> tuple[int, Any]:
        if self._closed:  # a late request during shutdown must not open a session again
            raise RuntimeError("the store is stopping")
        if self._request is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl or True)
            self._session = aiohttp.ClientSession(connector=connector)
            self._request = http_requester(
                self._session,
                self._urls,
                client_token=self._tokens[0],
                cluster_token=self._tokens[1],
                timeout_s=self._timeout_s,
            )
        return await self._request(method, store, path, body)

    async def close(self) -> None:
        self._closed = True
        session, self._session, self._request = self._session, None, None
        if session is not None:
            await session.close()
