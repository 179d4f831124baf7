"""The internal routes by which a placement driver moves a store's replicas (docs/sharding.md).

Rule: these are the store-side half of a replica move, under ``/raft/store/`` with the
cluster token (as the Raft routes): the driver observes the groups this store hosts, asks it
to create an empty replica of a group, to delete one — only the incarnation it names, so a
stale request can never delete a newer replica — and to record where a group it does not host
lives now. Membership itself changes through the group's leader (``/v1/members?group=``);
nothing here changes a configuration. Deleting is the caller's promise that the group's
committed configuration no longer names the replica (invariant 6): the driver checks it on the
group's leader first, and the store checks the replica's own configuration too.

- ``GET /raft/store/groups``: each hosted replica's group (the meta group's, ``meta``, last),
  id, role, term, leader, voters, learners, commit and configuration indexes.
- ``POST /raft/store/replicas`` ``{"group": "g1", "voters": [...]}`` → ``{"replica": id}``:
  a new replica (the store's next incarnation), or the one it already holds (``"existing":
  true``), so a retried request is harmless.
- ``DELETE /raft/store/replicas/{group}?replica=ID&config_index=N`` → ``{"removed": ID}``: N is
  the index of the group's committed configuration that no longer names it; 404 when the store
  holds no replica of the group, 409 when it holds another incarnation or when the replica's
  own configuration names it at index N or later (added again since: the caller is stale).
- ``PUT /raft/store/placement/{group}`` ``{"stores": [...]}``: the stores holding it now
  (for ``meta``: where this store looks for the meta leader).

Every route takes the meta group (``meta``) as it takes a data group: its replicas move the
same way (docs/sharding.md, "The meta group's replicas move").
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from raftcache.network.groups import store_of
from raftcache.server.bodies import read_body
from raftcache.server.errors import ApiError, bad_request
from raftcache.server.results import json_response
from raftcache.server.routes_divergence import check_cluster_token
from raftcache.server.validation import check_fields, parse_json_object, parse_node_id
from raftcache.store import Store
from raftcache.store.store import META_GROUP

PREFIX = "/raft/store"
_BODY_BYTES = 64 * 1024


def add_move_routes(app: web.Application, store: Store) -> None:
    """Register the routes above on a store's application."""

    def group_of(request: web.Request) -> str:
        gid = request.match_info["group"]
        if not store.knows(gid):
            raise ApiError(404, f"no group {gid[:80]!r} in this cluster")
        return gid

    async def get_groups(request: web.Request) -> web.Response:
        check_cluster_token(request)
        groups: list[dict[str, Any]] = []
        hosted = sorted(store.replicas.items())
        if store.meta is not None:
            hosted.append((META_GROUP, store.meta))
        for gid, replica in hosted:
            node = replica.node
            core = node.core
            groups.append(
                {
                    "group": gid,
                    "replica": node.node_id,
                    "role": node.role.value,
                    "term": node.current_term,
                    "leader": node.leader_id,
                    "voters": node.members,
                    "learners": node.learners,
                    "commit_index": node.commit_index,
                    "config_index": core.config_index if core is not None else 0,
                    "last_applied": node.last_applied,
                }
            )
        placement = {gid: list(stores) for gid, stores in store.placement.items()}
        return json_response({"store": store.store_id, "groups": groups, "placement": placement})

    async def post_replica(request: web.Request) -> web.Response:
        check_cluster_token(request)
        body = parse_json_object(await read_body(request, _BODY_BYTES))
        check_fields(body, frozenset({"group", "voters"}), "a replica request")
        gid = body.get("group")
        if not isinstance(gid, str) or not store.knows(gid):
            raise bad_request(f"group must name a group of this cluster, not {gid!r:.80}")
        given = body.get("voters")
        if not isinstance(given, list) or not given or len(given) > 16:
            raise bad_request("voters must be a list of 1 to 16 replica ids")
        voters = [parse_node_id(v, "voters[]") for v in given]
        held = store.hosted(gid)
        if held is not None:
            return json_response({"replica": held.node.node_id, "existing": True})
        try:
            replica = await store.add_replica(gid, voters)
        except ValueError as exc:  # voters naming this store's own replica, a race
            raise ApiError(409, str(exc)) from None
        return json_response({"replica": replica.node.node_id, "existing": False})

    async def delete_replica(request: web.Request) -> web.Response:
        check_cluster_token(request)
        gid = group_of(request)
        wanted = request.query.get("replica")
        if not wanted:
            raise bad_request("replica is required: the id of the replica to delete")
        raw = request.query.get("config_index", "")
        if not raw.isdigit() or len(raw) > 19:
            raise bad_request(
                "config_index is required: the index of the committed configuration that no "
                "longer names the replica"
            )
        try:
            removed = await store.remove_replica(
                gid, parse_node_id(wanted, "replica"), removed_at=int(raw)
            )
        except LookupError as exc:
            raise ApiError(404, str(exc)) from None
        except ValueError as exc:  # another incarnation: never delete it
            raise ApiError(409, str(exc)) from None
        return json_response({"removed": removed})

    async def put_placement(request: web.Request) -> web.Response:
        check_cluster_token(request)
        gid = group_of(request)
        body = parse_json_object(await read_body(request, _BODY_BYTES))
        check_fields(body, frozenset({"stores"}), "a placement")
        stores = body.get("stores")
        if not isinstance(stores, list) or not stores or len(stores) > 16:
            raise bad_request("stores must be a list of 1 to 16 store ids")
        ids = [parse_node_id(s, "stores[]") for s in stores]
        if any(store_of(s) != s for s in ids):
            raise bad_request("stores must be store ids, not replica ids")
        try:
            store.set_placement(gid, ids)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        shown = store.meta_voters if gid == META_GROUP else store.placement[gid]
        return json_response({"stores": list(shown)})

    app.router.add_get(f"{PREFIX}/groups", get_groups)
    app.router.add_post(f"{PREFIX}/replicas", post_replica)
    app.router.add_delete(PREFIX + "/replicas/{group}", delete_replica)
    app.router.add_put(PREFIX + "/placement/{group}", put_placement)
