"""``MetaAgent``: what every store of a cluster with a meta group does with the map.

Rule: one loop per store, every ``interval_s``:

1. **read the map** — linearizably: from this store's meta replica when it leads (the first
   leader writes the bootstrap map), else from the meta leader over HTTP (a meta follower's
   own replica may be behind after a restart, and an older map must never move routing
   back); the last map read is kept, so a meta group without a quorum costs routing nothing
   (data groups keep serving, from the last map and leader hints);
2. **learn from it** — every store's address (a store that joined is reached from then on)
   and, when the map's version moved, where each group lives (``Store.set_placement``), the
   meta group's included: where to look for the meta leader once its replicas moved;
3. **register** — this store's id, host label and addresses, until the map shows them (that
   is how a new store joins: ``raftcache serve --join``);
4. **drive** — on the meta leader only, one round of the placement driver
   (``raftcache.store.driver``) over the stores the map lists, decommissioning ones drained,
   stores silent for ``down_after_s`` replaced, the meta group's own replicas moved the same
   way (``meta_replication``); then the groups' observed placement — the meta group's too —
   recorded in the map. A driver is kept for one meta term (its down timers with it): a new
   meta leader starts its timers afresh, so it replaces a store later, never sooner. A deposed
   leader's late steps are refused by the groups (configuration index, invariant 3) and its
   late map writes by the compare-and-set (``raftcache.store.meta``).

Changes asked of a store that does not lead the meta group (registrations, drains) are sent
to the meta leader (``call``): its hint first, then each meta store as last known, then every
store known, following the leader each "not the meta leader" answer names (at the address the
answer carries, learnt when this store had none for it); a request already sent on once is not
sent on again (``FORWARDED``), so two stores with stale hints cannot loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, Final

import aiohttp

from raftcache.network.groups import store_of
from raftcache.raft.core import Role
from raftcache.sharding.clustermap import META, ClusterMap, GroupPlacement, StoreState
from raftcache.sharding.clustermap import Store as StoreInfo
from raftcache.store.driver import Observation, PlacementDriver, Request
from raftcache.store.meta import (
    MetaConflictError,
    MetaMap,
    meta_move_refusal,
    meta_replication,
    observed_placement,
)
from raftcache.store.store import META_GROUP, Store, group_id

log = logging.getLogger("raftcache.store.meta")

#: The query parameter a store adds to a meta request it sends on to another store.
FORWARDED: Final = "forwarded"


class MetaUnavailableError(RuntimeError):
    """No meta leader answered (the meta group has no quorum, or none of it is reachable)."""


class MetaAgent:
    """The loop above, and the way the routes reach the meta leader.

    Args:
        store: this store.
        me: this store's record (id, host label, addresses) to register.
        request: sends one HTTP request to a store by id (``driver.http_requester``).
        first: the bootstrap map (written by the first meta leader if none is).
        down_after_s: a store silent this long is replaced (``--store-down-after``).
        interval_s: seconds between rounds.
        clock: monotonic seconds (the driver's down timers).
        on_learn: told (store id → URL, the meta group's stores) when a newer map names
            others than it was last told, in a thread (it may write and sync a file):
            ``serve`` keeps them (``raftcache.store.known``).
    """

    def __init__(
        self,
        store: Store,
        me: StoreInfo,
        *,
        request: Request,
        first: Callable[[], ClusterMap],
        down_after_s: float = 300.0,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_learn: Callable[[Mapping[str, str], tuple[str, ...]], None] | None = None,
    ) -> None:
        self.store = store
        self._on_learn = on_learn
        self._learnt: tuple[dict[str, str], tuple[str, ...]] | None = None
        self.me = me
        self._request = request
        self._first = first
        self._down_after_s = down_after_s
        self._interval_s = interval_s
        self._clock = clock
        #: The last map read, and the version whose placements were applied.
        self.map: ClusterMap | None = None
        self._applied_version = -1
        self._driver: PlacementDriver | None = None
        self._driver_term = -1
        #: (the map's record, this store's, the meta leader asked) after the last
        #: registration: not sent again while they stay so (a record the leader kept
        #: different is not asked for every round), but asked again of a new meta leader — a
        #: leader of the previous release drops the ``host_label`` it does not know.
        self._registered: tuple[StoreInfo | None, StoreInfo, str | None] | None = None
        self._task: asyncio.Task[None] | None = None
        #: The last round's error (``/v1/status`` shows it), None after a clean round.
        self.last_error: str | None = None

    # --- the meta leader ----------------------------------------------------------------------

    def local(self) -> MetaMap | None:
        """The map through this store's meta replica when it leads the meta group."""
        meta = self.store.meta
        if meta is None or meta.node.role is not Role.LEADER:
            return None
        return MetaMap(meta.service)

    def leader_hint(self) -> str | None:
        """The store this store believes leads the meta group: its own meta replica's
        leader, else (no replica here, or one that knows no leader now: electing, or cut
        off) the first other of the meta stores the map (or the driver) last named, which
        lists the leader first."""
        meta = self.store.meta
        hint = None if meta is None else meta.node.leader_id
        if hint:
            return store_of(hint)
        return next((s for s in self.store.meta_voters if s != self.store.store_id), None)

    def leader_url(self, store_id: str | None) -> str | None:
        """The address this store knows for ``store_id`` (sent with a hint: the asker may
        never have learnt it)."""
        return None if store_id is None else self.store.addresses.get(store_id)

    def _candidates(self) -> list[str]:
        """Where to look for the meta leader: the hint, the meta stores as last known, then
        every other store known (a store whose meta stores all moved away while it was down
        still finds one that knows: each answers with its own hint)."""
        hint = self.leader_hint()
        order = [*([hint] if hint else []), *self.store.meta_voters, *sorted(self.store.addresses)]
        return [s for s in dict.fromkeys(order) if s != self.store.store_id]

    async def call(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        """Send a meta request on to the meta leader: the hint, then every meta store, then
        every store known — following the leader a "not the meta leader" answer (503) names,
        each store asked at most once; the first other answer. A hinted store this one has
        no address for is reached at the address the answer carries (``leader_url``), which
        is learnt — a store that missed every map naming the meta group's new stores still
        finds it through any store it knows; a known address is never replaced by a hint."""
        sep = "&" if "?" in path else "?"
        tried: list[str] = []
        asked: set[str] = set()
        order = self._candidates()
        while order:
            target = order.pop(0)
            if target in asked or target not in self.store.addresses:
                continue
            asked.add(target)
            try:
                status, answer = await self._request(
                    method, target, f"{path}{sep}{FORWARDED}=1", body
                )
            except (TimeoutError, OSError, RuntimeError, aiohttp.ClientError) as exc:
                tried.append(f"{target}: {type(exc).__name__}")
                continue
            if status == 503:
                tried.append(f"{target}: not the meta leader")
                hint = answer.get("leader") if isinstance(answer, dict) else None
                if isinstance(hint, str) and hint not in asked and hint != self.store.store_id:
                    url = answer.get("leader_url")
                    if hint not in self.store.addresses and isinstance(url, str) and url:
                        self.store.learn_address(hint, url)
                    order.insert(0, hint)
                continue
            return status, answer
        raise MetaUnavailableError(
            "no meta leader answered (" + ("; ".join(tried) or "no meta store known") + ")"
        )

    async def read(self, consistency: str = "linearizable") -> ClusterMap | None:
        """The map: the local leader's, the local replica's (``stale``), or the leader's."""
        leader = self.local()
        if leader is not None:
            return await leader.read(consistency)
        meta = self.store.meta
        if consistency == "stale" and meta is not None:
            return await MetaMap(meta.service).read("stale")
        status, answer = await self.call("GET", "/raft/meta/map", None)
        if status != 200:
            raise MetaUnavailableError(f"the meta leader answered {status}: {answer}")
        body = answer.get("map") if isinstance(answer, dict) else None
        return None if body is None else ClusterMap.from_json(body)

    async def change(
        self,
        method: str,
        path: str,
        body: Any,
        local: Callable[[MetaMap], Awaitable[ClusterMap]],
    ) -> ClusterMap:
        """A change: ``local(MetaMap)`` here when this store leads the meta group, else the
        request sent on to the leader. ``MetaConflictError`` for a 409."""
        leader = self.local()
        if leader is not None:
            return await local(leader)
        status, answer = await self.call(method, path, body)
        if status == 409:
            raise MetaConflictError(answer.get("error", "refused"))
        if status != 200:
            raise MetaUnavailableError(f"the meta leader answered {status}: {answer}")
        return ClusterMap.from_json(answer["map"])

    async def register(self, me: StoreInfo) -> ClusterMap:
        return await self.change(
            "POST", "/raft/meta/stores", me.to_json(), lambda m: m.register(me)
        )

    async def set_state(self, store_id: str, state: StoreState) -> ClusterMap:
        async def here(meta: MetaMap) -> ClusterMap:
            if state is StoreState.REMOVED:
                # The groups' leaders are asked now; the map is brought up to what they say
                # (it may lag the driver's last step by a round) before it is checked too.
                seen, groups = await self._holds_nothing(meta, store_id)
                await meta.record(_placements(seen, groups))
            elif state is StoreState.DECOMMISSIONING:
                await self._meta_can_move(meta, store_id)
            return await meta.set_state(store_id, state, self._down())

        return await self.change(
            "PUT", f"/raft/meta/stores/{store_id}", {"state": state.value}, here
        )

    async def _holds_nothing(self, meta: MetaMap, store_id: str) -> tuple[Observation, int]:
        """Refuse to mark ``store_id`` removed unless every group's leader answered now and
        no configuration names it, nor does the store hold a replica: the map's placement is
        only what the driver last observed, and a store removed while a configuration still
        names it would be one the driver no longer looks after."""
        cmap = await meta.read()
        if cmap is None:
            raise MetaConflictError("the cluster map is not written yet")
        seen = await self._observer(cmap).observe()
        for gid, view in seen.groups.items():
            if view.leader_store is None:
                raise MetaConflictError(
                    f"cannot confirm that {store_id} holds nothing: {gid} has no leader now"
                )
            named = {store_of(m) for m in (*view.voters, *view.learners)}
            if store_id in named or store_id in view.replicas:
                raise MetaConflictError(
                    f"store {store_id} still holds a replica of {gid}: drain it first"
                )
        return seen, cmap.groups

    def _down(self) -> set[str]:
        """The stores this meta leader's driver counts down: no taker of a meta replica
        (``meta_move_refusal``). None before its first round of this term — an older term's
        driver stopped observing, and its timers may name stores back since; the meta plan
        never removes a live meta voter below three meanwhile (``driver.plan_meta``)."""
        meta = self.store.meta
        if self._driver is None or meta is None or meta.node.current_term != self._driver_term:
            return set()
        return self._driver.down()

    async def _meta_can_move(self, meta: MetaMap, store_id: str) -> None:
        """Refuse to drain a store whose meta replica nothing could take (the meta group's
        replicas as its configuration names them now, not only as the map recorded them)."""
        cmap = await meta.read()
        replica = self.store.meta
        if cmap is None or replica is None:
            return
        members = {store_of(m) for m in (*replica.node.members, *replica.node.learners)}
        voters = tuple(sorted(s for s in members if s in cmap.stores))
        if store_id not in voters:
            return
        now = cmap.with_placement(GroupPlacement(META, voters))
        why = meta_move_refusal(now, store_id, self._down())
        if why is not None:
            raise MetaConflictError(why)

    def _urls(self, cmap: ClusterMap) -> dict[str, str]:
        """Every store the map lists, removed ones too: a configuration may still name one
        (it is then drained like a decommissioning store, never ignored)."""
        return {
            s: i.http_url or self.store.addresses.get(s, "")
            for s, i in cmap.stores.items()
            if i.http_url or s in self.store.addresses
        }

    def _observer(self, cmap: ClusterMap) -> PlacementDriver:
        return PlacementDriver(
            self._urls(cmap),
            groups=cmap.groups,
            replication=cmap.replication,
            request=self._request,
            clock=self._clock,
            down_after_s=self._down_after_s,
            meta_replication=meta_replication(cmap.replication),
        )

    # --- the loop -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            try:
                await self.round()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next round tries again
                if self.last_error != repr(exc):
                    log.warning("meta round failed", extra={"why": repr(exc)})
                self.last_error = repr(exc)
            await asyncio.sleep(self._interval_s)

    async def round(self) -> None:
        """One round of the loop (see the module docstring)."""
        leader = self.local()
        if leader is not None:
            cmap = await leader.read()
            if cmap is None:
                cmap = await leader.initialise(self._first())
        else:
            # Through the meta leader, even on a meta follower: its own replica may be behind
            # (just restarted from an older snapshot), and an older map must never move
            # routing back (invariant 7; ``_learn`` also skips a version not newer).
            cmap = await self.read("linearizable")
        if cmap is None:
            return
        self.map = cmap
        if self._learn(cmap):
            await self._keep_learnt(cmap)
        known = cmap.stores.get(self.me.store_id)
        # Its record differs but for the state (the operators' to change): register again.
        # (Its ``host`` may be its id where its label clashes, ``MetaMap.register``: the label
        # it registered is compared.)
        stale = (
            known is None
            or replace(known, state=self.me.state, host=self.me.host, label=self.me.label)
            != self.me
            or known.host_label != self.me.host_label
        )
        asked = self.leader_hint() if leader is None else self.store.store_id
        if stale and (known, self.me, asked) != self._registered:
            self.map = cmap = await self.register(self.me)
            kept = cmap.stores.get(self.me.store_id)
            self._registered = (kept, self.me, asked)
            log.info(
                "store registered",
                extra={"id": self.me.store_id, "host": kept.host if kept else "?"},
            )
        if self.local() is not None:
            await self._drive(cmap)

    def _learn(self, cmap: ClusterMap) -> bool:
        """Addresses from any map; placements only from a newer one (True then)."""
        for info in cmap.stores.values():
            if info.state is not StoreState.REMOVED and info.http_url:
                self.store.learn_address(info.store_id, info.http_url)
        if cmap.version <= self._applied_version:
            return False  # only a newer map moves routing (a stale replica may lag: invariant 7)
        self._applied_version = cmap.version
        for p in cmap.placements:
            stores = [*([p.leader] if p.leader else []), *p.voters, *p.learners]
            try:
                self.store.set_placement(group_id(p.group), stores)  # it drops repeats
            except ValueError:
                continue
        if cmap.meta is not None:
            m = cmap.meta
            self.store.set_placement(
                META_GROUP, [*([m.leader] if m.leader else []), *m.voters, *m.learners]
            )
        return True

    async def _keep_learnt(self, cmap: ClusterMap) -> None:
        """Tell ``on_learn`` what the map names, when that changed — in a thread: it writes
        and syncs a file (``raftcache.store.known``), which must not stall the event loop
        the store's groups run on."""
        urls = {
            s: i.http_url
            for s, i in cmap.stores.items()
            if i.state is not StoreState.REMOVED and i.http_url
        }
        learnt = (urls, self.store.meta_voters)
        if self._on_learn is None or learnt == self._learnt:
            return
        try:
            await asyncio.to_thread(self._on_learn, *learnt)
        except OSError as exc:  # only hints: routing goes on from memory
            log.warning("known stores not kept", extra={"why": repr(exc)})
        else:
            self._learnt = learnt

    async def _drive(self, cmap: ClusterMap) -> None:
        meta = self.store.meta
        assert meta is not None
        term = meta.node.current_term
        if self._driver is None or term != self._driver_term:
            self._driver = self._observer(cmap)
            self._driver_term = term
        driver = self._driver
        driver.urls = self._urls(cmap)
        driver.hosts = {s: i.host_label for s, i in cmap.stores.items()}
        driver.drain = {s for s, i in cmap.stores.items() if i.state is not StoreState.UP}
        driver.known = {group_id(p.group): p.replicas for p in cmap.placements}
        driver.meta_replication = meta_replication(cmap.replication)
        await driver.round()
        leader = self.local()
        # Recorded as the groups are *after* the round's steps: the placement the driver
        # just told every store (its leader first), which the map must not contradict.
        seen = driver.last_seen
        if leader is None or seen is None:
            return
        observed = _placements(seen, cmap.groups)
        if observed:
            self.map = await leader.record(observed)


def _placements(seen: Observation, groups: int) -> list[GroupPlacement]:
    """Each group's placement — the meta group's too — as its leader's configuration names
    it in ``seen`` (groups without a leader left out)."""
    observed: list[GroupPlacement] = []
    numbered = [(g, group_id(g)) for g in range(groups)]
    for g, gid in [*numbered, (META, META_GROUP)]:
        view = seen.groups.get(gid)
        if view is None or view.leader_store is None or not view.voters:
            continue
        leading = next((v for v in view.voters if store_of(v) == view.leader_store), None)
        observed.append(observed_placement(g, view.voters, view.learners, leading))
    return observed
