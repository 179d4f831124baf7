"""A store's groups behind one HTTP application: which group serves a request, and how.

Rule: a store (``raftcache.store.Store``) hosts replicas of some data groups and knows, for the
others, which stores hold them (``RemoteGroup``). The application of a store has one
``ServerContext`` per data group — its node, service and ``Forwarder`` — all sharing the
store's settings, admission, metrics and forwarding client session (``StoreFront``). A key is
served by its group (``raftcache.slots``): here when this store's replica can (the leader, or a
follower for a lease or stale read, exactly as on a single-group node), else forwarded to the
group leader's store with the single-group ``Forwarder``'s semantics, unchanged. For a group
this store holds no replica of, the forwarder's "node" is the ``RemoteGroup``, told each time
its guess at the leader did not take a request (``moved``).

The application's own context (``CONTEXT``) keeps the single-group shape, so the middleware
chain, the key handlers and the lean front run on a store unchanged: its service is a
``RoutingService`` that hands each call to the key's group and tags a ``NotLeaderError`` with
the group (``GroupNotLeaderError``), and its forwarder (``StoreForwarder``) hands the request
to that group's ``Forwarder``. A batch whose keys span groups is refused (400 ``CROSSSLOT``)
before anything is proposed: a batch is atomic within one group's log only.

Routes that act on one group (membership, leadership, snapshots, backups, alarms, digests,
watches) take ``?group=gN`` (``on_group``); on a store of one group it may be left out.

Replicas move at run time (``Store.add_replica``, ``remove_replica``, ``set_placement``): the
front listens (``Store.on_change``) and rebuilds the changed group's view — its node, service,
forwarder and context — where the next request looks it up, so the key → group → context path
stays one index and one dict lookup. Requests already running on the old view finish there; a
removed replica's "stopped" answer to one it certainly did not take turns into forwarding on
the new view. A leader named by a replica id of a later incarnation (``<store>.<n>``) is
reached at its store (``GroupForwarder``, ``raftcache.network.groups.store_of``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, TypeVar, cast

import orjson
from aiohttp import web
from multidict import CIMultiDictProxy
from yarl import URL

from raftcache.cache.commands import BatchOp, Session
from raftcache.cache.entries import Item
from raftcache.cache.results import BatchItem, IncrResult, TtlResult
from raftcache.network.groups import store_of
from raftcache.raft.errors import IndeterminateError, NodeStoppedError, NotLeaderError
from raftcache.server.admission import Admission
from raftcache.server.bodies import BODY, read_body
from raftcache.server.context import ROUTED, ServerContext, ServerSettings
from raftcache.server.errors import ApiError, bad_request, unavailable
from raftcache.server.forwarding import Forwarder, Handler, PeerSession
from raftcache.server.metrics import GroupState, ServerMetrics
from raftcache.server.ports import NodePort, ServicePort
from raftcache.server.validation import parse_key_path
from raftcache.slots import SLOTS, key_group, key_slot
from raftcache.store import GroupReplica, RemoteGroup, Store, group_id
from raftcache.store.agent import MetaAgent

T = TypeVar("T")

#: The query parameter naming a data group.
GROUP_PARAM: Final = "group"
#: Listing more ids than this in an error message abbreviates them as ``g0 … gN``.
_IDS_SHOWN: Final = 16


class GroupNotLeaderError(NotLeaderError):
    """``NotLeaderError`` of one data group: the store forwards the request to its leader."""

    def __init__(self, group: str, leader_id: str | None) -> None:
        super().__init__(leader_id, f"not the leader of group {group} (leader hint: {leader_id})")
        self.group = group


def _tagged(exc: NotLeaderError, group: str) -> GroupNotLeaderError:
    if isinstance(exc, GroupNotLeaderError):
        return exc
    return GroupNotLeaderError(group, exc.leader_id)


def crossslot(keys_by_group: Mapping[str, str]) -> ApiError:
    """The 400 of a multi-key request whose keys span groups: each group with the slot of
    the first of its keys (``keys_by_group``: group id → that key, in group order)."""
    named = ", ".join(
        f"{gid} (slot {key_slot(key)}: {orjson.dumps(key).decode()})"
        for gid, key in keys_by_group.items()
    )
    return ApiError(
        400,
        f"CROSSSLOT: keys span groups {named}; a batch is atomic within one group"
        " — use a {hash tag}",
        extra={"crossslot": True, "groups": list(keys_by_group)},
    )


# --- groups this store holds no replica of ------------------------------------------------------


class LiveRemoteGroup:
    """A group this store holds no replica of, as the store's ``RemoteGroup`` of it is at each
    use. When the store learns the group's stores anew (``Store.set_placement`` makes a new
    ``RemoteGroup``), a request already being forwarded on the old view goes on with the new
    stores, rather than circling the old ones until it gives up; when the store comes to host
    the group again, such a request keeps the last guess."""

    __slots__ = ("_last", "_store", "group", "node_id")

    def __init__(self, store: Store, remote: RemoteGroup) -> None:
        self._store = store
        self._last = remote
        self.group = remote.group
        self.node_id = remote.node_id

    def _now(self) -> RemoteGroup:
        found = self._store.remote.get(self.group)
        if found is not None:
            self._last = found
        return self._last

    @property
    def leader_id(self) -> str:
        return self._now().leader_id

    @property
    def members(self) -> tuple[str, ...]:
        return self._now().members

    def leader_address(self) -> str | None:
        return None

    def moved(self, hint: str | None = None) -> None:
        self._now().moved(hint)


class RemoteNode:
    """The ``NodePort`` of a group this store holds no replica of: nothing to report but the
    stores that hold it; every request that needs its leader is forwarded (``NotLeaderError``
    with the current guess)."""

    def __init__(self, remote: LiveRemoteGroup) -> None:
        self.remote = remote

    @property
    def node_id(self) -> str:
        return self.remote.node_id

    @property
    def leader_id(self) -> str | None:
        return None  # not known here: ``remote.leader_id`` is only a guess

    @property
    def current_term(self) -> int:
        return 0

    @property
    def commit_index(self) -> int:
        return 0

    @property
    def last_applied(self) -> int:
        return 0

    @property
    def members(self) -> tuple[str, ...]:
        return self.remote.members

    def leader_address(self) -> str | None:
        return None

    def status(self) -> dict[str, Any]:
        return {}

    def raft_stats(self) -> dict[str, Any]:
        return {}

    def _elsewhere(self) -> GroupNotLeaderError:
        return GroupNotLeaderError(self.remote.group, self.remote.leader_id)

    async def add_member(self, node_id: str, address: str | None = None) -> Any:
        raise self._elsewhere()

    async def remove_member(self, node_id: str) -> Any:
        raise self._elsewhere()

    async def transfer_leadership(self, to: str | None = None) -> Any:
        raise self._elsewhere()

    async def take_snapshot(self) -> Any:
        raise ApiError(404, f"store {self.node_id} holds no replica of group {self.remote.group}")


class RemoteService:
    """The ``ServicePort`` of a group this store holds no replica of: every call is the
    group leader's to answer (``GroupNotLeaderError`` with the current guess)."""

    def __init__(self, remote: LiveRemoteGroup) -> None:
        self.remote = remote

    def _elsewhere(self) -> GroupNotLeaderError:
        return GroupNotLeaderError(self.remote.group, self.remote.leader_id)

    async def get(
        self, key: str, consistency: str = "linearizable", *, touch: bool = True
    ) -> Item | None:
        raise self._elsewhere()

    async def mget(
        self, keys: Sequence[str], consistency: str = "linearizable", *, touch: bool = True
    ) -> list[Item | None]:
        raise self._elsewhere()

    async def list_keys(
        self, prefix: str | None, after: str | None, limit: int, consistency: str
    ) -> tuple[list[str], str | None]:
        raise self._elsewhere()

    async def set(
        self,
        key: str,
        value: bytes,
        ttl: float | None = None,
        if_version: int | None = None,
        if_absent: bool = False,
        session: Session | None = None,
    ) -> int:
        raise self._elsewhere()

    async def delete(
        self, key: str, if_version: int | None = None, session: Session | None = None
    ) -> bool:
        raise self._elsewhere()

    async def incr(self, key: str, by: int = 1, session: Session | None = None) -> IncrResult:
        raise self._elsewhere()

    async def batch(
        self, ops: Sequence[BatchOp], session: Session | None = None
    ) -> list[BatchItem]:
        raise self._elsewhere()

    async def expire(
        self,
        key: str,
        ttl: float | None = None,
        *,
        at: float | None = None,
        condition: str | None = None,
        if_version: int | None = None,
        session: Session | None = None,
    ) -> TtlResult:
        raise self._elsewhere()

    async def flush(self, prefix: str = "", session: Session | None = None) -> int:
        raise self._elsewhere()

    async def stats(self) -> Mapping[str, Any]:
        return {}


# --- multi-group helpers ------------------------------------------------------------------------


def merge_pages(
    pages: Sequence[tuple[list[str], str | None]], limit: int
) -> tuple[list[str], str | None]:
    """The key listing of several groups, each page listed after the same cursor: the first
    ``limit`` keys of their union in key order, and the cursor of the next page (the last key
    given) when any group has more. No key is skipped: a group whose page was cut holds
    ``limit`` keys up to its own cursor, so the merged page ends at or before that cursor."""
    merged = sorted(key for keys, _ in pages for key in keys)
    more = len(merged) > limit or any(cursor is not None for _, cursor in pages)
    page = merged[:limit]
    return page, (page[-1] if more and page else None)


def sum_stats(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Several groups' cache stats as one store's: numbers summed (``hit_rate`` recomputed
    from the summed hits and misses), anything else as the first group has it."""
    total: dict[str, Any] = {}
    for stats in parts:
        for name, value in stats.items():
            if name not in total:
                total[name] = value
            elif _is_number(value) and _is_number(total[name]):
                total[name] += value
    hits, misses = total.get("hits"), total.get("misses")
    if "hit_rate" in total and isinstance(hits, int) and isinstance(misses, int):
        reads = hits + misses
        total["hit_rate"] = hits / reads if reads else 0.0
    return total


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


async def stats_of(service: ServicePort) -> Mapping[str, Any]:
    """A service's stats (a service may give them sync or async)."""
    result: Any = service.stats()
    if inspect.isawaitable(result):
        result = await result
    stats: Mapping[str, Any] = result
    return stats


async def all_of(parts: Sequence[Awaitable[T]]) -> list[T]:
    """Run ``parts`` concurrently and wait for every one (a write is never cancelled half
    way); the first failure, in the parts' order, is raised once all are done."""
    if len(parts) == 1:
        return [await parts[0]]
    results = await asyncio.gather(*parts, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast(list[T], results)


# --- the store's own service: each call to its key's group --------------------------------------


class RoutingService:
    """The ``ServicePort`` of a store: each call goes to the service of its key's group (a
    hosted replica's ``CacheService`` or a ``RemoteService``), and a ``NotLeaderError`` comes
    back tagged with the group. Multi-key calls are split by group; a batch over several
    groups is refused (``crossslot``)."""

    def __init__(self, groups: int, services: Sequence[ServicePort]) -> None:
        self._groups = groups
        self._services = list(services)

    def replace(self, index: int, service: ServicePort) -> None:
        """Group ``index`` is served by ``service`` from now on (its replica moved)."""
        self._services[index] = service

    def _route(self, key: str) -> tuple[int, ServicePort]:
        index = key_group(key, self._groups)
        return index, self._services[index]

    def _stopped(self, exc: NodeStoppedError, index: int, service: ServicePort) -> Exception:
        """What a stopped replica's error becomes: when ``service`` was replaced meanwhile (the
        store's replica was removed while the call ran) and the call certainly did not take
        effect (not ``IndeterminateError``), the group's ``GroupNotLeaderError``, so that the
        request goes on to the group's new view (forwarded); otherwise the error itself."""
        if self._services[index] is service or isinstance(exc, IndeterminateError):
            return exc
        return GroupNotLeaderError(group_id(index), None)

    async def get(
        self, key: str, consistency: str = "linearizable", *, touch: bool = True
    ) -> Item | None:
        index, service = self._route(key)
        try:
            return await service.get(key, consistency, touch=touch)
        except NotLeaderError as exc:
            raise _tagged(exc, group_id(index)) from None
        except NodeStoppedError as exc:
            raise self._stopped(exc, index, service) from None

    async def set(
        self,
        key: str,
        value: bytes,
        ttl: float | None = None,
        if_version: int | None = None,
        if_absent: bool = False,
        session: Session | None = None,
    ) -> int:
        index, service = self._route(key)
        try:
            return await service.set(key, value, ttl, if_version, if_absent, session)
        except NotLeaderError as exc:
            raise _tagged(exc, group_id(index)) from None
        except NodeStoppedError as exc:
            raise self._stopped(exc, index, service) from None

    async def delete(
        self, key: str, if_version: int | None = None, session: Session | None = None
    ) -> bool:
        index, service = self._route(key)
        try:
            return await service.delete(key, if_version, session)
        except NotLeaderError as exc:
            raise _tagged(exc, group_id(index)) from None
        except NodeStoppedError as exc:
            raise self._stopped(exc, index, service) from None

    async def incr(self, key: str, by: int = 1, session: Session | None = None) -> IncrResult:
        index, service = self._route(key)
        try:
            return await service.incr(key, by, session)
        except NotLeaderError as exc:
            raise _tagged(exc, group_id(index)) from None
        except NodeStoppedError as exc:
            raise self._stopped(exc, index, service) from None

    async def expire(
        self,
        key: str,
        ttl: float | None = None,
        *,
        at: float | None = None,
        condition: str | None = None,
        if_version: int | None = None,
        session: Session | None = None,
    ) -> TtlResult:
        index, service = self._route(key)
        try:
            return await service.expire(
                key, ttl, at=at, condition=condition, if_version=if_version, session=session
            )
        except NotLeaderError as exc:
            raise _tagged(exc, group_id(index)) from None
        except NodeStoppedError as exc:
            raise self._stopped(exc, index, service) from None

    def group_of_batch(self, ops: Sequence[BatchOp]) -> int:
        """The one group every op's key belongs to; ``crossslot`` when they span several."""
        first: dict[int, str] = {}
        for op in ops:
            first.setdefault(key_group(op.key, self._groups), op.key)
        if len(first) > 1:
            raise crossslot({group_id(g): first[g] for g in sorted(first)})
        return next(iter(first)) if first else 0

    async def batch(
        self, ops: Sequence[BatchOp], session: Session | None = None
    ) -> list[BatchItem]:
        index = self.group_of_batch(ops)
        service = self._services[index]
        try:
            return await service.batch(ops, session)
        except NotLeaderError as exc:
            raise _tagged(exc, group_id(index)) from None
        except NodeStoppedError as exc:
            raise self._stopped(exc, index, service) from None

    # The HTTP front fans these out itself (``routes_store``), forwarding each group's part;
    # here each part must be served by this store's replicas (else GroupNotLeaderError).

    async def mget(
        self, keys: Sequence[str], consistency: str = "linearizable", *, touch: bool = True
    ) -> list[Item | None]:
        split = split_keys(keys, self._groups)
        parts = await all_of(
            [
                self._on(g, self._services[g].mget(ks, consistency, touch=touch))
                for g, (_, ks) in split.items()
            ]
        )
        out: list[Item | None] = [None] * len(keys)
        for (positions, _), items in zip(split.values(), parts, strict=True):
            for position, item in zip(positions, items, strict=True):
                out[position] = item
        return out

    async def list_keys(
        self, prefix: str | None, after: str | None, limit: int, consistency: str
    ) -> tuple[list[str], str | None]:
        pages = await all_of(
            [
                self._on(g, service.list_keys(prefix, after, limit, consistency))
                for g, service in enumerate(self._services)
            ]
        )
        return merge_pages(pages, limit)

    async def flush(self, prefix: str = "", session: Session | None = None) -> int:
        counts = await all_of(
            [
                self._on(g, service.flush(prefix, session))
                for g, service in enumerate(self._services)
            ]
        )
        return sum(counts)

    async def stats(self) -> Mapping[str, Any]:
        return sum_stats([await stats_of(service) for service in self._services])

    async def _on(self, index: int, call: Awaitable[T]) -> T:
        try:
            return await call
        except NotLeaderError as exc:
            raise _tagged(exc, group_id(index)) from None


def split_keys(keys: Sequence[str], groups: int) -> dict[int, tuple[list[int], list[str]]]:
    """Keys by group index (in group order): each group's positions in ``keys`` and its keys."""
    split: dict[int, tuple[list[int], list[str]]] = {}
    for position, key in enumerate(keys):
        positions, part = split.setdefault(key_group(key, groups), ([], []))
        positions.append(position)
        part.append(key)
    return dict(sorted(split.items()))


# --- forwarding by group ------------------------------------------------------------------------


class StoreForwarder:
    """The store's ``ForwarderPort``: a ``NotLeaderError`` goes to its group's ``Forwarder``.

    The group is the error's (``GroupNotLeaderError``), else the one the request was routed to
    (``ROUTED``), else its key's (a hand-over's ``NotLeaderError`` on a key route or a batch).
    A request whose group cannot be told is answered 503, certainly not applied."""

    def __init__(self, front: StoreFront) -> None:
        self._front = front

    @property
    def forwarded_total(self) -> int:
        front = self._front
        return sum(front.forwarded_of(gid) for gid in front.forwarders)

    async def handle_not_leader(
        self, request: web.Request, handler: Handler, error: NotLeaderError
    ) -> web.StreamResponse:
        gid = error.group if isinstance(error, GroupNotLeaderError) else self._group_of(request)
        forwarder = self._front.forwarders.get(gid) if gid is not None else None
        if forwarder is None:
            raise unavailable("not the leader of this request's group")
        return await forwarder.handle_not_leader(request, handler, error)

    def _group_of(self, request: web.Request) -> str | None:
        routed: ServerContext | None = request.get(ROUTED)
        if routed is not None:
            return routed.group
        store = self._front.store
        path = request.path
        try:
            if path.startswith("/v1/keys/"):
                return store.group_of(parse_key_path(request.raw_path))
            if path == "/v1/batch":
                ops = orjson.loads(request.get(BODY, b"{}")).get("ops") or []
                return store.group_of(str(ops[0]["key"]))
        except (ApiError, ValueError, TypeError, KeyError, IndexError, AttributeError):
            return None
        return None

    async def close(self) -> None:
        await self._front.session.close()


# --- the store's contexts -----------------------------------------------------------------------


class GroupForwarder(Forwarder):
    """A group's ``Forwarder`` on a store: a leader named by a replica id of a later
    incarnation (``<store>.<n>``, which no peer list names) is reached at its store."""

    def leader_url(self, leader_id: str) -> str | None:
        url = super().leader_url(leader_id)
        if url is None and store_of(leader_id) != leader_id:
            url = super().leader_url(store_of(leader_id))
        return url


#: What a group's view is built from: this store's replica of it, or where it is held.
GroupSource = GroupReplica | RemoteGroup


class StoreFront:
    """A store's per-group contexts and what they share (see the module docstring).

    The views follow the store's replicas as they move (``Store.on_change``): when this store
    gains or loses its replica of a group, or learns the group's stores changed, ``rebuild``
    makes that group's node, service, forwarder and context anew — from the replica, or from
    the group's ``RemoteGroup`` — and puts them where the next request looks them up (the
    dicts below and the ``RoutingService``), so requests arriving after the change use the new
    view, and requests already running on the old one finish there (a removed replica answers
    "not the leader" or "stopped", and they are forwarded, or retried by the client).

    Args:
        store: the store (its replicas, remote groups and placement).
        settings: the server settings, shared by every group.
    """

    def __init__(self, store: Store, settings: ServerSettings) -> None:
        self.store = store
        self.settings = settings
        #: The store's meta agent (``/v1/status`` reports the map it read), when it has one.
        self.meta_agent: MetaAgent | None = None
        self.session = PeerSession(settings.client_ssl_context)
        self.admission = Admission(settings.admission)
        self.nodes: dict[str, NodePort] = {}
        services: dict[str, ServicePort] = {}
        self.forwarders: dict[str, Forwarder] = {}
        self._sources: dict[str, GroupSource] = {}
        #: Requests forwarded by the earlier views of each group (their forwarders retired).
        self._forwarded_before: dict[str, int] = dict.fromkeys(store.group_ids(), 0)
        for gid in store.group_ids():
            source = self._source(gid)
            self._sources[gid] = source
            self.nodes[gid], services[gid], self.forwarders[gid] = self._view(source)
        self.first = self._first()
        states: list[GroupState] = [
            (gid, self.nodes[gid] if gid in store.replicas else None, self._total(gid))
            for gid in store.group_ids()
        ]
        self.metrics = ServerMetrics(
            self.nodes[self.first],
            lambda: sum(self.forwarded_of(gid) for gid in self.forwarders),
            self.admission.snapshot,
            groups=states,
        )
        self.contexts: dict[str, ServerContext] = {
            gid: self._context(gid, services[gid]) for gid in store.group_ids()
        }
        self.service = RoutingService(store.groups, [services[g] for g in store.group_ids()])
        #: The application's own context (``CONTEXT``): the store's service and forwarder.
        self.context = ServerContext(
            node=self.nodes[self.first],
            service=self.service,
            settings=settings,
            forwarder=StoreForwarder(self),
            metrics=self.metrics,
            admission=self.admission,
        )
        store.on_change(self.rebuild)

    def _source(self, gid: str) -> GroupSource:
        replica = self.store.replicas.get(gid)
        return replica if replica is not None else self.store.remote[gid]

    def _first(self) -> str:
        """The group whose replica the store's top-level status fields describe."""
        hosted = self.hosted()
        return hosted[0] if hosted else self.store.group_ids()[0]

    def _view(self, source: GroupSource) -> tuple[NodePort, ServicePort, Forwarder]:
        if isinstance(source, GroupReplica):
            return source.node, source.service, self._forwarder(source.node)
        live = LiveRemoteGroup(self.store, source)
        forwarder = self._forwarder(live, on_moved=live.moved)
        return RemoteNode(live), RemoteService(live), forwarder

    def _context(self, gid: str, service: ServicePort) -> ServerContext:
        return ServerContext(
            node=self.nodes[gid],
            service=service,
            settings=self.settings,
            forwarder=self.forwarders[gid],
            metrics=self.metrics,
            admission=self.admission,
            group=gid,
        )

    def rebuild(self, gid: str) -> None:
        """Group ``gid``'s view anew, from what the store holds of it now (``on_change``):
        nothing is rebuilt while it is still the same replica, or the same ``RemoteGroup``."""
        source = self._source(gid)
        if source is self._sources[gid]:
            return
        self._sources[gid] = source
        node, service, forwarder = self._view(source)
        self._forwarded_before[gid] += self.forwarders[gid].forwarded_total
        self.nodes[gid] = node
        self.forwarders[gid] = forwarder
        self.contexts[gid] = self._context(gid, service)
        self.service.replace(self.store.group_ids().index(gid), service)
        self.metrics.set_group(gid, node if isinstance(source, GroupReplica) else None)
        self.first = self._first()
        self.context.node = self.nodes[self.first]

    def _forwarder(
        self, node: Any, *, on_moved: Callable[[str | None], None] | None = None
    ) -> Forwarder:
        settings = self.settings
        return GroupForwarder(
            node,
            peer_urls=settings.peer_urls,
            leader_wait_s=settings.leader_wait_s,
            timeout_s=settings.forward_timeout_s,
            session=self.session,
            on_moved=on_moved,
        )

    def forwarded_of(self, gid: str) -> int:
        """Requests of group ``gid`` forwarded so far, by every view it has had."""
        return self._forwarded_before[gid] + self.forwarders[gid].forwarded_total

    def _total(self, gid: str) -> Callable[[], int]:
        return lambda: self.forwarded_of(gid)

    def hosted(self) -> list[str]:
        """The groups this store holds a replica of, in group order."""
        return [gid for gid in self.store.group_ids() if gid in self.store.replicas]

    def valid_ids(self) -> str:
        """The group ids, for error messages (abbreviated past ``_IDS_SHOWN``)."""
        ids = self.store.group_ids()
        return ", ".join(ids) if len(ids) <= _IDS_SHOWN else f"{ids[0]} … {ids[-1]}"

    def named_group(self, request: web.Request, *, required: bool) -> str | None:
        """The group ``?group=`` names (400 when it names none, or is repeated); when absent,
        None — or, if ``required`` on a store of several groups, 400."""
        values = request.query.getall(GROUP_PARAM, [])
        if len(values) > 1:
            raise bad_request(f"query parameter {GROUP_PARAM} given more than once")
        if not values:
            if required and self.store.groups > 1:
                raise bad_request(
                    f"query parameter {GROUP_PARAM} is required: this store serves "
                    f"{self.store.groups} groups, name one of {self.valid_ids()}"
                )
            return group_id(0) if required else None
        gid = values[0]
        if gid not in self.contexts:
            raise bad_request(
                f"query parameter {GROUP_PARAM}={gid[:40]!r} names no group: "
                f"one of {self.valid_ids()}"
            )
        return gid

    def not_hosted(self, gid: str) -> ApiError:
        """The 404 of a request that must be served by a replica this store does not hold."""
        members = ", ".join(self.store.placement[gid])
        return ApiError(
            404,
            f"store {self.store.store_id} holds no replica of group {gid}; "
            f"its replicas are on {members}",
            extra={"group": gid, "stores": list(self.store.placement[gid])},
        )

    def slots_of(self, gid: str) -> list[int]:
        """``[first, last]`` slot of a group."""
        g = int(gid[1:])
        groups = self.store.groups
        return [g * SLOTS // groups, (g + 1) * SLOTS // groups - 1]


STORE_FRONT: Final = web.AppKey("raftcache.server.store_front", StoreFront)


def front_of(request: web.Request) -> StoreFront:
    """The store front of the application serving ``request``."""
    front = request.app.get(STORE_FRONT)
    return front if front is not None else request.config_dict[STORE_FRONT]


#: What a not-hosted group's request becomes in ``on_group``: forwarded to the group's leader
#: (after its body is read, with at most this many bytes), or refused (404).
BodyLimit = Callable[[web.Request], int]
FORWARD_NO_BODY: Final = 0


def on_group(
    handler: Handler,
    *,
    forward: BodyLimit | int | None = None,
    before: Callable[[web.Request], None] | None = None,
    prepare: Callable[[web.Request, str], None] | None = None,
) -> Handler:
    """``handler`` run on the group ``?group=`` names (``request_context`` returns its
    context). For a group this store holds no replica of: with ``forward`` (the body limit,
    ``FORWARD_NO_BODY`` for none) the request goes to the group's leader; without, 404.
    ``before`` runs first of all (a token check); ``prepare`` once the group is known."""

    async def routed(request: web.Request) -> web.StreamResponse:
        if before is not None:
            before(request)
        front = front_of(request)
        gid = front.named_group(request, required=True)
        assert gid is not None
        context = front.contexts[gid]
        request[ROUTED] = context
        remote = front.store.remote.get(gid)
        if remote is not None:
            if forward is None:
                raise front.not_hosted(gid)
            limit = forward(request) if callable(forward) else forward
            if limit and request.can_read_body:
                await read_body(request, limit)  # the forwarder sends the body it read
            raise GroupNotLeaderError(gid, remote.leader_id)
        if prepare is not None:
            prepare(request, gid)
        return await handler(request)

    return routed


class PartRequest:
    """One group's part of a fanned-out request (listing, flush, ``mget``), as the
    ``Forwarder`` reads a request: the client's headers (its token, session), a method, a
    path and query, and the part's own body."""

    __slots__ = ("_state", "headers", "method", "path", "raw_path")

    def __init__(
        self,
        parent: web.Request,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        body: bytes = b"",
    ) -> None:
        self.headers: CIMultiDictProxy[str] = parent.headers
        self.method = method
        self.path = path
        self.raw_path = str(URL.build(path=path, query=list(query)))
        self._state: dict[Any, Any] = {BODY: body} if body else {}

    def get(self, key: Any, default: Any = None) -> Any:
        return self._state.get(key, default)


class PartRefusedError(Exception):
    """A group's part was answered with an error by the store it was forwarded to: that
    answer is the whole request's."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(f"HTTP {response.status}")
        self.response = response


class _ServedHereError(Exception):
    """The forwarder found this store leads the group after all: the part was served here."""

    def __init__(self, result: Any) -> None:
        super().__init__("served here")
        self.result = result


async def group_part(
    context: ServerContext,
    local: Callable[[], Awaitable[T]],
    part: Callable[[], PartRequest],
    decode: Callable[[Any], T],
) -> T:
    """One group's part of a fanned-out request: ``local()`` on this store's replica, or —
    when it raises ``NotLeaderError`` — the ``part()`` request through the group's forwarder
    (forwarded once, retried within ``leader_wait_s``, 503 when no leader takes it); a 200
    answer is ``decode``d from its JSON body (ValueError, KeyError or TypeError: a 502), any
    other answer raises ``PartRefusedError``."""
    try:
        return await local()
    except NotLeaderError as exc:
        error = exc

    async def here(_: web.Request) -> web.StreamResponse:
        raise _ServedHereError(await local())

    try:
        answer = await context.forwarder.handle_not_leader(cast(web.Request, part()), here, error)
    except _ServedHereError as served:
        return cast(T, served.result)
    response = cast(web.Response, answer)
    if response.status != 200:
        raise PartRefusedError(response)
    try:
        return decode(orjson.loads(cast(bytes, response.body)))
    except (ValueError, KeyError, TypeError) as exc:
        raise ApiError(502, f"unreadable answer from group {context.group}'s leader") from exc
