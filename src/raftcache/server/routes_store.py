"""The routes of a store's application that span its groups (``server.groups``): the key
listing and prefix flush, ``mget``, and the operational reads (status, stats, health, metrics).

Rule: each fans out over the groups concurrently, every group's part served by this store's
replica when it can (``group_part``: as the single-group handler would), else forwarded to the
group leader's store as a request restricted to that group (``?group=gN``; ``mget``'s parts
need none, their keys are all the group's) — so each part keeps today's consistency, and
nothing is atomic across groups. A part the leader's store answers with an error makes that
answer the whole request's. The key routes of one key, and ``batch`` (one group, or a 400
``CROSSSLOT``), are the single-group handlers over the store's ``RoutingService``.

- ``GET /v1/keys``: each group's page after the same cursor, merged in key order
  (``merge_pages``): the cursor semantics are the single group's.
- ``DELETE /v1/keys?prefix=P``: every group flushes ``P`` (one log entry each); the deleted
  counts are summed. A failure of one group leaves the others flushed: retry.
- ``POST /v1/mget``: the values in request order; each group's part read at the consistency
  asked for, the parts not at one instant.
- ``GET /v1/status``: the single-group fields, of the store's first hosted group (so a reader
  of one group keeps working), plus ``sharding`` and ``groups`` (every group of the cluster;
  a hosted one with this store's ``replica`` id, its leader and members as Raft names them,
  and on the leader's replica ``follower_lag``: each other replica's match lag, in entries).
- ``GET /v1/shards``: the cluster map as this store knows it — every group's slots, members
  and leader as store ids (its own replica's view, with the term; for a group it holds no
  replica of, its ``RemoteGroup``'s guess, no term) and every store's URL — for clients that
  route by slot.
- ``GET /v1/stats``: cache figures summed over the hosted groups, each group's under
  ``groups``. ``GET /v1/health``: 200 while every hosted group knows a leader.
  ``GET /metrics``: per-group series labelled ``group``.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from raftcache.cache.backup import BackupFormatError, verify_backup
from raftcache.cache.snapshot import SnapshotFormatError, read_snapshot
from raftcache.network.groups import store_of
from raftcache.server import (
    routes_admin,
    routes_backup,
    routes_divergence,
    routes_keys,
    routes_pubsub,
    routes_scripts,
    routes_watch,
)
from raftcache.server.bodies import read_body
from raftcache.server.context import context_of, request_context
from raftcache.server.drain import DRAIN
from raftcache.server.errors import ApiError, bad_request, json_error, too_large
from raftcache.server.groups import (
    FORWARD_NO_BODY,
    GROUP_PARAM,
    PartRefusedError,
    PartRequest,
    StoreFront,
    all_of,
    front_of,
    group_part,
    merge_pages,
    on_group,
    split_keys,
    stats_of,
    sum_stats,
)
from raftcache.server.metrics import CONTENT_TYPE
from raftcache.server.results import (
    expect_result,
    hash_positions,
    json_response,
    session_from_headers,
    to_values,
)
from raftcache.server.routes_admin import MapVersion, node_status, shards_body
from raftcache.server.routes_keys import batch_body_limit, single_query
from raftcache.server.routes_watch import ROUTED_HUB, WATCH, WatchSettings
from raftcache.server.routes_watch_groups import StoreWatch
from raftcache.server.validation import (
    parse_consistency,
    parse_limit,
    parse_mget_body,
    parse_prefix_or_after,
    parse_touch,
)
from raftcache.slots import key_group, key_slot
from raftcache.store import group_id


def _groups_asked(request: web.Request, front: StoreFront) -> list[str]:
    """Every group, or the one ``?group=`` names (a part forwarded by another store)."""
    gid = front.named_group(request, required=False)
    return front.store.group_ids() if gid is None else [gid]


def _part_query(request: web.Request, gid: str) -> list[tuple[str, str]]:
    """The request's own query, restricted to ``gid``."""
    query = [(k, v) for k, v in request.query.items() if k != "group"]
    return [*query, ("group", gid)]


def _keys_page(body: Any) -> tuple[list[str], str | None]:
    keys, cursor = body["keys"], body["next"]
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise TypeError("keys")
    if cursor is not None and not isinstance(cursor, str):
        raise TypeError("next")
    return keys, cursor


def _count(body: Any) -> int:
    deleted = body["deleted"]
    if type(deleted) is not int:
        raise TypeError("deleted")
    return deleted


async def list_keys(request: web.Request) -> web.StreamResponse:
    """``GET /v1/keys?prefix&after&limit&consistency[&group]`` over every group."""
    front = front_of(request)
    prefix = parse_prefix_or_after(single_query(request, "prefix"), "prefix")
    after = parse_prefix_or_after(single_query(request, "after"), "after")
    limit = parse_limit(single_query(request, "limit"), front.settings.limits)
    consistency = parse_consistency(single_query(request, "consistency"))

    async def part(gid: str) -> tuple[list[str], str | None]:
        ctx = front.contexts[gid]
        return await group_part(
            ctx,
            lambda: ctx.service.list_keys(prefix, after, limit, consistency),
            lambda: PartRequest(request, "GET", "/v1/keys", _part_query(request, gid)),
            _keys_page,
        )

    try:
        pages = await all_of([part(gid) for gid in _groups_asked(request, front)])
    except PartRefusedError as failed:
        return failed.response
    keys, cursor = merge_pages(pages, limit)
    return json_response({"keys": keys, "next": cursor})


async def flush_keys(request: web.Request) -> web.StreamResponse:
    """``DELETE /v1/keys?prefix=P[&group]``: every group flushes ``P``; the counts summed."""
    front = front_of(request)
    prefix = parse_prefix_or_after(single_query(request, "prefix"), "prefix")
    if prefix is None:
        raise bad_request("DELETE /v1/keys needs ?prefix= (an empty prefix deletes every key)")
    session = session_from_headers(request)

    async def flush_here(gid: str) -> int:
        deleted = await front.contexts[gid].service.flush(prefix, session=session)
        expect_result(deleted, int, session)
        return int(deleted)

    async def part(gid: str) -> int:
        return await group_part(
            front.contexts[gid],
            lambda: flush_here(gid),
            lambda: PartRequest(request, "DELETE", "/v1/keys", _part_query(request, gid)),
            _count,
        )

    try:
        counts = await all_of([part(gid) for gid in _groups_asked(request, front)])
    except PartRefusedError as failed:
        return failed.response
    return json_response({"deleted": sum(counts)})


def _decoded_size(value: str | None) -> int:
    if value is None:
        return 0
    padding = 2 if value.endswith("==") else 1 if value.endswith("=") else 0
    return len(value) // 4 * 3 - padding


async def mget(request: web.Request) -> web.StreamResponse:
    """``POST /v1/mget`` ``{"keys": [...]}``: each group's keys read by that group, the
    values put back in request order."""
    front = front_of(request)
    limits = front.settings.limits
    consistency = parse_consistency(single_query(request, "consistency"))
    touch = parse_touch(single_query(request, "touch"))
    body = await read_body(request, batch_body_limit(request))
    keys = parse_mget_body(body, limits)
    if not keys:
        return json_response({"values": []})
    split = split_keys(keys, front.store.groups)
    query = list(request.query.items())

    async def part(index: int, part_keys: list[str]) -> tuple[list[str | None], list[int]]:
        ctx = front.contexts[group_id(index)]

        async def here() -> tuple[list[str | None], list[int]]:
            items = await ctx.service.mget(part_keys, consistency, touch=touch)
            return to_values(items), hash_positions(items)

        def decode(answer: Any) -> tuple[list[str | None], list[int]]:
            values = answer["values"]
            if not isinstance(values, list) or len(values) != len(part_keys):
                raise ValueError("values")
            if not all(v is None or isinstance(v, str) for v in values):
                raise TypeError("values")
            hashes = answer.get("hashes", [])
            if not isinstance(hashes, list) or not all(
                type(i) is int and 0 <= i < len(values) for i in hashes
            ):
                raise ValueError("hashes")
            return values, hashes

        return await group_part(
            ctx,
            here,
            lambda: PartRequest(
                request, "POST", "/v1/mget", query, orjson.dumps({"keys": part_keys})
            ),
            decode,
        )

    try:
        parts = await all_of([part(index, ks) for index, (_, ks) in split.items()])
    except PartRefusedError as failed:
        return failed.response
    values: list[str | None] = [None] * len(keys)
    hashes: list[int] = []
    for (positions, _), (part_values, part_hashes) in zip(split.values(), parts, strict=True):
        for position, value in zip(positions, part_values, strict=True):
            values[position] = value
        hashes += [positions[i] for i in part_hashes]
    size = sum(_decoded_size(v) for v in values)
    if size > limits.max_batch_bytes:
        raise too_large(
            f"the values total {size} bytes, over {limits.max_batch_bytes}: ask for fewer keys"
        )
    if hashes:
        return json_response({"values": values, "hashes": sorted(hashes)})
    return json_response({"values": values})


def _group_status(front: StoreFront, gid: str) -> dict[str, Any]:
    base: dict[str, Any] = {"group": gid, "slots": front.slots_of(gid)}
    replica = front.store.replicas.get(gid)
    if replica is None:
        return {
            **base,
            "hosted": False,
            "role": None,
            "leader": None,
            "term": None,
            "commit_index": None,
            "last_applied": None,
            "members": sorted(front.store.placement[gid]),
        }
    status = node_status(replica.node)
    entry = {
        **base,
        "hosted": True,
        "replica": replica.node.node_id,
        **{k: status[k] for k in ("role", "leader", "term", "commit_index", "last_applied")},
        "members": status["members"],
    }
    if status["role"] == "leader":
        # Only the leader knows how far each other replica's log trails its own (match lag);
        # a follower's own figures cannot tell, so the dashboard also compares indexes.
        entry["follower_lag"] = replica.node.raft_stats().get("follower_lag", {})
    return entry


async def get_status(request: web.Request) -> web.Response:
    """``GET /v1/status`` of a store (see the module docstring)."""
    front = front_of(request)
    first = front.contexts[front.first]
    status = node_status(first.node)
    status["id"] = front.store.store_id
    service = first.service
    version_info = getattr(service, "command_version_info", None)
    if version_info is not None:
        status.update(version_info())
    divergence_info = getattr(service, "divergence_info", None)
    if divergence_info is not None:
        status.update(divergence_info())
    own = context_of(request)
    if own.resp_endpoints:
        status["resp"] = dict(own.resp_endpoints)
    status["sharding"] = {"groups": front.store.groups, "store": front.store.store_id}
    status["groups"] = [_group_status(front, gid) for gid in front.store.group_ids()]
    if front.store.meta_voters:
        status["meta"] = _meta_status(front)
    return json_response(status)


def _meta_status(front: StoreFront) -> dict[str, Any]:
    """The meta group as this store sees it: its voters, this store's replica (role, leader)
    and the last map its agent read (version; the last round's error, e.g. no meta quorum)."""
    replica, agent = front.store.meta, front.meta_agent
    cmap = None if agent is None else agent.map
    return {
        "voters": sorted(front.store.meta_voters),  # where they are now, as last told
        "hosted": replica is not None,
        "role": None if replica is None else replica.node.role.value,
        "leader": None if replica is None else replica.node.leader_id,
        "map_version": None if cmap is None else cmap.version,
        "error": None if agent is None else agent.last_error,
    }


def _shard(front: StoreFront, gid: str) -> dict[str, Any]:
    """One group's entry of ``GET /v1/shards``."""
    replica = front.store.replicas.get(gid)
    leader: str | None
    term: int | None
    if replica is None:
        remote = front.store.remote[gid]
        leader, term, members = remote.leader_id, None, sorted(remote.members)
    else:  # replica ids (``<store>.<n>`` after a move) name their store: a map lists stores
        node = replica.node
        leader = None if node.leader_id is None else store_of(node.leader_id)
        term, members = node.current_term, sorted(store_of(m) for m in node.members)
    return {
        "group": gid,
        "slots": front.slots_of(gid),
        "leader": leader,
        "term": term,
        "hosted": replica is not None,
        "members": members,
    }


def shards_handler(front: StoreFront) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``GET /v1/shards`` of a store (see the module docstring)."""
    version = MapVersion()

    async def get_shards(request: web.Request) -> web.Response:
        shards = [_shard(front, gid) for gid in front.store.group_ids()]
        stores = front.settings.peer_urls
        body = shards_body(front.store.groups, front.store.store_id, stores, shards, version)
        return json_response(body)

    return get_shards


async def _hosted_stats(front: StoreFront) -> dict[str, Any]:
    hosted = front.hosted()
    found = await all_of([stats_of(front.contexts[gid].service) for gid in hosted])
    return dict(zip(hosted, found, strict=True))


async def get_stats(request: web.Request) -> web.Response:
    """``GET /v1/stats`` of a store: ``cache`` summed over the hosted groups, ``raft`` of
    the first, every hosted group's under ``groups``."""
    front = front_of(request)
    per_group = await _hosted_stats(front)
    groups = {
        gid: {"cache": dict(stats), "raft": front.nodes[gid].raft_stats()}
        for gid, stats in per_group.items()
    }
    body: dict[str, Any] = {
        "cache": sum_stats(list(per_group.values())),
        "raft": front.nodes[front.first].raft_stats(),
        "groups": groups,
        "process": front.metrics.process_stats(),
    }
    metrics = getattr(front.store.network, "metrics", None)
    if metrics is not None and hasattr(metrics, "snapshot"):
        body["network"] = metrics.snapshot()
    return json_response(body)


async def get_health(request: web.Request) -> web.Response:
    """``GET /v1/health`` of a store: 200 while every hosted group knows a leader."""
    front = front_of(request)
    leaders = {gid: front.nodes[gid].leader_id for gid in front.hosted()}
    store_id = front.store.store_id
    missing = [gid for gid, leader in leaders.items() if leader is None]
    if missing:
        return json_error(
            503,
            f"no leader known for group {', '.join(missing)}",
            extra={"id": store_id, "groups": leaders},
        )
    first = leaders.get(front.first)
    return json_response({"status": "ok", "id": store_id, "leader": first, "groups": leaders})


async def get_metrics(request: web.Request) -> web.Response:
    """``GET /metrics`` of a store: Prometheus text, per-group series labelled ``group``."""
    front = front_of(request)
    body = front.metrics.render(await _hosted_stats(front))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def _stray_key(data: bytes, group: int, groups: int) -> str | None:
    """A key of the backup ``data`` that belongs to another group than ``group`` (None when
    every key is the group's, or the file does not decode: ``post_restore`` says why)."""
    try:
        _, body = verify_backup(data)
        records = read_snapshot(io.BytesIO(body)).records
    except (BackupFormatError, SnapshotFormatError):
        return None
    return next((key for key in records if key_group(key, groups) != group), None)


async def restore(request: web.Request) -> web.StreamResponse:
    """``POST /v1/restore?group=gN``: ``post_restore`` into that group, once every key of the
    backup is seen to belong to it (a backup restores into the group it was taken from: any
    other key would sit where no request for it is ever routed)."""
    front = front_of(request)
    gid = request_context(request).group
    if front.store.groups > 1 and gid is not None:
        limit = front.settings.admission.max_inflight_bytes
        data = await read_body(request, limit, "backup")
        stray = await asyncio.to_thread(_stray_key, data, int(gid[1:]), front.store.groups)
        if stray is not None:
            owner = group_id(key_group(stray, front.store.groups))
            raise ApiError(
                400,
                f"bad backup file for group {gid}: it holds {orjson.dumps(stray).decode()}, "
                f"a key of group {owner} (slot {key_slot(stray)}); restore a backup into "
                "the group it was taken from",
            )
    return await routes_backup.post_restore(request)


def add_store_routes(app: web.Application, front: StoreFront, watch: WatchSettings | None) -> None:
    """Register a store's routes on ``app``: the key API, the operational API, and the
    routes of one group (``?group=``, ``on_group``)."""
    router = app.router
    settings = front.settings
    routes_keys.add_key_routes(app, listing=list_keys, flush=flush_keys, multi_get=mget)
    _add_watch(app, front, watch)
    small = routes_keys.SMALL_BODY_BYTES
    router.add_get("/openapi.json", routes_admin.get_openapi)
    router.add_get("/v1/status", get_status)
    router.add_get("/v1/stats", get_stats)
    router.add_get("/v1/health", get_health)
    router.add_get("/metrics", get_metrics)
    router.add_get("/v1/shards", shards_handler(front))
    router.add_post("/v1/members", on_group(routes_admin.add_member, forward=small))
    router.add_delete(
        "/v1/members/{id}", on_group(routes_admin.remove_member, forward=FORWARD_NO_BODY)
    )
    router.add_post("/v1/leader/transfer", on_group(routes_admin.transfer_leader, forward=small))
    router.add_post("/v1/snapshot", on_group(routes_admin.take_snapshot))
    router.add_post(
        routes_scripts.SCRIPTS_PATH,
        on_group(routes_scripts.post_scripts, forward=routes_scripts.scripts_body_limit),
    )
    router.add_post(
        routes_pubsub.PUBLISH_PATH,
        on_group(routes_pubsub.publish, forward=routes_pubsub.publish_body_limit),
    )
    router.add_get("/v1/backup", on_group(routes_backup.get_backup, forward=FORWARD_NO_BODY))
    router.add_post("/v1/restore", on_group(restore, forward=settings.admission.max_inflight_bytes))
    token = routes_divergence.check_cluster_token
    router.add_get(
        routes_divergence.DIGEST_PATH, on_group(routes_divergence.get_digest, before=token)
    )
    router.add_post(routes_divergence.KICK_PATH, on_group(routes_divergence.kick, before=token))
    router.add_get("/v1/alarms", on_group(routes_divergence.get_alarms, forward=FORWARD_NO_BODY))
    router.add_delete(
        "/v1/alarms/{id}", on_group(routes_divergence.clear_alarm, forward=FORWARD_NO_BODY)
    )


def _add_watch(app: web.Application, front: StoreFront, settings: WatchSettings | None) -> None:
    """``/v1/watch?group=gN``: one hub per hosted group (a watch reads one group's history);
    without ``group`` on a store of several groups, every group merged (``StoreWatch``, which
    also keeps the hubs as replicas come and go)."""
    watches = StoreWatch(front, settings or WatchSettings())
    app[WATCH] = watches.first_hub()
    drain = app[DRAIN]
    drain.on_drain.append(watches.stop)
    front.metrics.registry.register(watches.collector())
    front.store.on_change(watches.changed)

    def on_hub(request: web.Request, gid: str) -> None:
        request[ROUTED_HUB] = watches.hub_of(gid)

    one_group = on_group(routes_watch.watch, prepare=on_hub)

    async def watch(request: web.Request) -> web.StreamResponse:
        if front.store.groups > 1 and GROUP_PARAM not in request.query:
            return await watches.handle(request)
        return await one_group(request)

    async def close_relays(_: web.Application) -> None:
        await watches.close()

    app.on_cleanup.append(close_relays)
    # No HEAD: a stream has no end for a HEAD to wait for (405 with Allow: GET).
    app.router.add_get("/v1/watch", watch, allow_head=False)
