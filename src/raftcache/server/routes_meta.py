"""The internal routes of the meta group: read the cluster map, register a store, change its
state (docs/sharding.md, "The meta group").

Rule: under ``/raft/meta/`` with the cluster token, on every store of a cluster with a meta
group; a store that does not lead the meta group sends the request on to the one that does
(``MetaAgent.call``) — once: a request that was already sent on (``?forwarded=1``) and reached
a store that does not lead either is answered 503 naming the leader it knows, and the sender
tries the next meta store.

- ``GET /raft/meta/map`` → ``{"map": ClusterMap JSON, "meta": [meta voters], "leader": id}``
  (linearizable, through the meta leader; ``?consistency=stale`` from this store's replica).
- ``POST /raft/meta/stores`` ``{"id", "host", "http_url", "resp_address",
  "cluster_address", "nonce"}`` → ``{"map": …}``: register a store, or update its addresses
  and host label; 409 for an id that was removed (ids are never reused), an id registered
  with another nonce (another process), or a label that would put two of a group's replicas
  on one host.
- ``PUT /raft/meta/stores/{id}`` ``{"state": "up"|"decommissioning"|"removed"}`` → ``{"map":
  …}``: drain a store (the meta leader's driver moves its replicas away, the meta group's
  included), take it back, or remove it once it holds no replica (409 before; 409 too for
  draining a store whose meta replica no other store can take, naming why).

A 503 "not the meta leader" carries ``leader``: the store this one believes leads the meta
group (``MetaAgent.leader_hint``), and ``leader_url``: that store's address as this one knows
it (null when it knows none). The sender asks it next, learning the address when it had none
— how a store finds the meta group after its replicas moved to stores it never heard of.

The meta group's own membership, changed by the placement driver on the meta leader (its
replicas move as a data group's do, docs/sharding.md): served by this store's meta replica
only when it leads (503 with the hint otherwise: never sent on, the change was planned from
this leader's configuration), the ``config_index`` checked as ``/v1/members`` checks it
(invariant 3):

- ``POST /raft/meta/members`` ``{"id", "url", "config_index"}``: add a learner, catch it up,
  promote it (as ``POST /v1/members``). ``config_index`` is required here (400 naming it when
  missing): only the driver changes the meta group's membership, always from a configuration.
- ``DELETE /raft/meta/members/{id}?config_index=N``: remove a replica — never this leader's
  own (409: leadership is transferred away first, docs/sharding.md); ``config_index``
  required (400).
- ``POST /raft/meta/leader/transfer`` ``{"to": id}``: hand meta leadership to ``id``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from raftcache.raft.errors import MembershipChangeError, NotLeaderError, RaftError
from raftcache.raft.node import RaftNode
from raftcache.server.bodies import read_body
from raftcache.server.errors import ApiError, bad_request
from raftcache.server.results import json_response
from raftcache.server.routes_admin import check_config_index, parse_config_index
from raftcache.server.routes_divergence import check_cluster_token
from raftcache.server.validation import (
    check_fields,
    parse_json_object,
    parse_node_id,
    parse_node_url,
)
from raftcache.sharding.clustermap import ClusterMap, StoreState
from raftcache.sharding.clustermap import Store as StoreInfo
from raftcache.store.agent import FORWARDED, MetaAgent, MetaUnavailableError
from raftcache.store.meta import MetaConflictError

PREFIX = "/raft/meta"
_BODY_BYTES = 16 * 1024
_STORE_FIELDS = frozenset(
    {"id", "host", "http_url", "resp_address", "cluster_address", "state", "nonce"}
)


def add_meta_routes(app: web.Application, agent: MetaAgent) -> None:
    """Register the routes above on a store's application."""

    def leader_hint() -> str | None:
        return agent.leader_hint()

    def not_leader() -> ApiError:
        hint = leader_hint()
        return ApiError(
            503,
            f"not the meta leader (leader hint: {hint})",
            extra={"leader": hint, "leader_url": agent.leader_url(hint)},
        )

    def required_config_index(raw: object) -> int:
        """The configuration a meta membership change was planned from (invariant 3)."""
        expected = parse_config_index(raw)
        if expected is None:
            raise bad_request(
                "config_index is required: the configuration index the change was planned from"
            )
        return expected

    def answer(cmap: ClusterMap | None) -> web.Response:
        return json_response(
            {
                "map": None if cmap is None else cmap.to_json(),
                "meta": list(agent.store.meta_voters),
                "leader": leader_hint(),
            }
        )

    async def guarded(
        request: web.Request, run: Callable[[], Awaitable[web.Response]]
    ) -> web.Response:
        """Run here when this store leads the meta group, or send on (once)."""
        if request.query.get(FORWARDED) and agent.local() is None:
            raise not_leader()
        try:
            return await run()
        except MetaConflictError as exc:
            raise ApiError(409, str(exc)) from None
        except (MetaUnavailableError, NotLeaderError) as exc:
            raise ApiError(503, f"the meta group has no reachable leader: {exc}") from None
        except (RaftError, TimeoutError) as exc:  # a change whose outcome is unknown
            raise ApiError(503, f"the meta group did not answer in time: {exc!r}") from None

    async def get_map(request: web.Request) -> web.Response:
        check_cluster_token(request)
        consistency = request.query.get("consistency", "linearizable")
        if consistency not in ("linearizable", "stale"):
            raise bad_request("consistency must be linearizable or stale")
        if consistency == "stale" and agent.store.meta is not None:
            return answer(await agent.read("stale"))

        async def run() -> web.Response:
            return answer(await agent.read("linearizable"))

        return await guarded(request, run)

    async def post_store(request: web.Request) -> web.Response:
        check_cluster_token(request)
        body = parse_json_object(await read_body(request, _BODY_BYTES))
        check_fields(body, _STORE_FIELDS, "a store")
        store_id = parse_node_id(body.get("id"), "id")
        if "." in store_id:
            raise bad_request("a store id holds no '.' (replica ids are <store>.<n>)")
        parse_node_url(body.get("http_url"))
        try:
            info = StoreInfo.from_json({**body, "state": "up"})
        except (ValueError, TypeError) as exc:
            raise bad_request(str(exc)) from None

        async def run() -> web.Response:
            return answer(await agent.register(info))

        return await guarded(request, run)

    async def put_store(request: web.Request) -> web.Response:
        check_cluster_token(request)
        store_id = parse_node_id(request.match_info["store"], "store")
        body = parse_json_object(await read_body(request, _BODY_BYTES))
        check_fields(body, frozenset({"state"}), "a store state")
        try:
            state = StoreState(str(body.get("state")))
        except ValueError:
            raise bad_request(
                "state must be one of " + ", ".join(s.value for s in StoreState)
            ) from None

        async def run() -> web.Response:
            return answer(await agent.set_state(store_id, state))

        return await guarded(request, run)

    def meta_leader() -> RaftNode:
        """This store's meta replica's node, when it leads the meta group (else 503)."""
        replica = agent.store.meta
        if agent.local() is None or replica is None:
            raise not_leader()
        return replica.node

    async def changing(change: Awaitable[None]) -> None:
        try:
            await change
        except NotLeaderError:
            raise not_leader() from None
        except MembershipChangeError as exc:
            raise ApiError(409, str(exc) or "membership change refused") from None

    async def post_member(request: web.Request) -> web.Response:
        check_cluster_token(request)
        obj = parse_json_object(await read_body(request, _BODY_BYTES))
        check_fields(obj, frozenset({"id", "url", "config_index"}), "members body")
        node_id = parse_node_id(obj.get("id"))
        url = parse_node_url(obj.get("url"))
        expected = required_config_index(obj.get("config_index"))
        node = meta_leader()
        check_config_index(node, expected)  # then proposed at once (invariant 3)
        await changing(node.add_member(node_id, url))
        return json_response({"added": node_id, "members": sorted(node.members)})

    async def delete_member(request: web.Request) -> web.Response:
        check_cluster_token(request)
        node_id = parse_node_id(request.match_info["id"])
        expected = required_config_index(request.query.get("config_index"))
        node = meta_leader()
        if node_id == node.node_id:
            raise ApiError(
                409,
                f"{node_id} leads the meta group: transfer meta leadership away before "
                "removing its replica",
            )
        check_config_index(node, expected)
        await changing(node.remove_member(node_id))
        return json_response({"removed": node_id, "members": sorted(node.members)})

    async def transfer(request: web.Request) -> web.Response:
        check_cluster_token(request)
        obj = parse_json_object(await read_body(request, _BODY_BYTES))
        check_fields(obj, frozenset({"to"}), "transfer body")
        to = parse_node_id(obj.get("to"), "to")
        node = meta_leader()
        if to == node.node_id:
            return json_response({"leader": to})
        try:
            await node.transfer_leadership(to)
        except NotLeaderError:
            raise not_leader() from None
        except MembershipChangeError as exc:
            raise ApiError(409, str(exc)) from None
        return json_response({"leader": node.leader_id})

    app.router.add_get(f"{PREFIX}/map", get_map)
    app.router.add_post(f"{PREFIX}/members", post_member)
    app.router.add_delete(PREFIX + "/members/{id}", delete_member)
    app.router.add_post(f"{PREFIX}/leader/transfer", transfer)
    app.router.add_post(f"{PREFIX}/stores", post_store)
    app.router.add_put(PREFIX + "/stores/{store}", put_store)
