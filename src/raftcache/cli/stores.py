"""``raftcache store list|drain|remove|rebalance``: a sharded cluster's stores.

Rule: on a cluster with a meta group (every cluster bootstrapped by this release) the meta
leader's placement driver moves replicas, and these commands only change and read the map
through any store (``/raft/meta/``): ``drain ID...`` marks the stores decommissioning and waits
until the map shows them holding no replica, the meta group's included (they may then be
stopped); ``remove ID...``
drains, then marks them removed (their ids are never used again); ``rebalance`` waits until
replicas and leaders are within one over the stores; ``list`` prints the stores. On a cluster
without one (bootstrapped before the meta group) ``drain`` and ``rebalance`` run the driver
(``raftcache.store.driver``) from the operator's shell until placement has nothing left to do,
printing each step on stdout. Every change is idempotent: a command interrupted is simply run
again. Needs the cluster token (``--cluster-token`` or ``RAFTCACHE_CLUSTER_TOKEN``) when the
stores have one. Exit codes: 0 done, 3 not done within ``--deadline`` (or no store answered),
1 a change the map refused (the reason printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping
from typing import Any

import aiohttp

from raftcache.cli.common import (
    EXIT_MISSING,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    add_client_options,
    fail,
    make_client,
    positive_float,
    positive_int,
    run_async,
    ssl_context_of,
    token_of,
)
from raftcache.client.errors import RaftcacheError
from raftcache.sharding.clustermap import ClusterMap, StoreState
from raftcache.store.driver import PlacementDriver, Request, http_requester

#: Seconds between two attempts while the meta group has no leader (one just failed).
RETRY_S = 0.5

CLUSTER_TOKEN_ENV = "RAFTCACHE_CLUSTER_TOKEN"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "store",
        help="move replicas between stores",
        description="Move replicas between the stores of a sharded cluster (serve --groups).",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="list|drain|remove|rebalance")
    for name, text in (
        ("list", "the stores of the cluster: id, host, state, replicas and leaders held"),
        ("rebalance", "replace replicas of stores that stay down; even out replicas and leaders"),
        ("drain", "move every replica off the given stores, so they can be stopped"),
        ("remove", "drain the given stores, then remove them from the cluster for good"),
    ):
        q = actions.add_parser(name, help=text, description=text)
        if name in ("drain", "remove"):
            q.add_argument("stores", nargs="+", metavar="ID", help="stores to empty")
        q.add_argument("--replicas", type=positive_int, default=3, help="replicas per group (3)")
        q.add_argument(
            "--down-after",
            type=positive_float,
            default=30.0,
            metavar="S",
            help="a store silent this long counts as down: its replicas are replaced (30)",
        )
        q.add_argument(
            "--deadline",
            type=positive_float,
            default=600.0,
            metavar="S",
            help="give up after S seconds (600)",
        )
        q.add_argument(
            "--cluster-token",
            default=None,
            help=f"the stores' cluster token (env {CLUSTER_TOKEN_ENV})",
        )
        add_client_options(q)
        q.set_defaults(func=cmd_store)


def cmd_store(args: argparse.Namespace) -> int:
    return run_async("store", _run(args))


async def _run(args: argparse.Namespace) -> int:
    cluster_token = args.cluster_token or os.environ.get(CLUSTER_TOKEN_ENV)
    connector = aiohttp.TCPConnector(ssl=ssl_context_of(args) or True)
    async with aiohttp.ClientSession(connector=connector) as session:
        urls, groups = await _discover(args)
        if not urls:
            return fail("store", "no store answered (is it a sharded cluster?)", EXIT_UNAVAILABLE)
        request = http_requester(
            session, urls, client_token=token_of(args), cluster_token=cluster_token, timeout_s=15
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.deadline
        while True:
            try:
                meta = await _read_map(request, urls)
                break
            except RuntimeError as exc:  # a meta group, but no leader: no second driver then
                # Between two meta leaders (one just died) for a moment: ask again until
                # the deadline, then give up with the reason.
                if loop.time() + RETRY_S >= deadline:
                    return fail("store", str(exc), EXIT_UNAVAILABLE)
                await asyncio.sleep(RETRY_S)
        if meta is not None:
            return await _with_meta(args, request, urls, meta, deadline)
        if args.action in ("list", "remove"):
            return fail(
                "store",
                f"{args.action} needs a cluster with a meta group (this one was bootstrapped "
                "before it)",
                EXIT_UNAVAILABLE,
            )
        unknown = sorted(set(getattr(args, "stores", ())) - set(urls))
        if unknown:
            return fail("store", f"no such store: {', '.join(unknown)}", EXIT_UNAVAILABLE)
        driver = PlacementDriver(
            urls,
            groups=groups,
            replication=args.replicas,
            request=http_requester(
                session, urls, client_token=token_of(args), cluster_token=cluster_token
            ),
            clock=loop.time,
            drain=getattr(args, "stores", ()),
            down_after_s=args.down_after,
        )
        printed = 0
        while loop.time() < deadline:
            done = await driver.run(timeout_s=min(5.0, deadline - loop.time()))
            for step in driver.steps_done[printed:]:
                print(step, flush=True)
            printed = len(driver.steps_done)
            if done:
                print("placement done", file=sys.stderr)
                return EXIT_OK
        return fail(
            "store", "placement not done before the deadline; run it again", EXIT_UNAVAILABLE
        )


async def _read_map(request: Request, urls: Mapping[str, str]) -> ClusterMap | None:
    """The map, through the first store that answers; None only when a store says it has no
    meta group (404: a cluster bootstrapped before it). RuntimeError when the cluster has
    one but it cannot be read (no quorum): never fall back to a driver of the shell's then."""
    last = "no store answered"
    for store in urls:
        try:
            status, body = await request("GET", store, "/raft/meta/map", None)
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            last = f"{store}: {type(exc).__name__}"
            continue
        if status == 200 and isinstance(body, dict) and isinstance(body.get("map"), dict):
            return ClusterMap.from_json(body["map"])
        if status == 404:
            return None  # a store without the meta routes: no meta group
        error = body.get("error") if isinstance(body, dict) else body
        last = f"{store}: HTTP {status} {error}"
    raise RuntimeError(f"the cluster map cannot be read now ({last}); try again later")


async def _with_meta(
    args: argparse.Namespace,
    request: Request,
    urls: Mapping[str, str],
    cmap: ClusterMap,
    deadline: float,
) -> int:
    """The commands on a cluster with a meta group: change the map, then watch it, all
    before ``deadline`` (loop time)."""
    if args.action == "list":
        _print_stores(cmap)
        return EXIT_OK
    wanted = list(dict.fromkeys(getattr(args, "stores", ())))
    unknown = sorted(set(wanted) - set(cmap.stores))
    if unknown:
        return fail("store", f"no such store: {', '.join(unknown)}", EXIT_UNAVAILABLE)
    for store_id in wanted:
        if cmap.stores[store_id].state is StoreState.REMOVED:
            continue
        code = await _set_state(request, urls, store_id, StoreState.DECOMMISSIONING, deadline)
        if code != EXIT_OK:
            return code
    loop = asyncio.get_running_loop()
    printed: dict[str, int] = {}
    while loop.time() < deadline:
        with contextlib.suppress(RuntimeError):  # the meta group between leaders
            cmap = await _read_map(request, urls) or cmap
        if args.action == "rebalance":
            if _balanced(cmap):
                print("placement done", file=sys.stderr)
                return EXIT_OK
        else:
            held = {s: cmap.held_by(s) for s in wanted}  # the meta group's replica too
            for s, n in held.items():
                if printed.get(s) != n:
                    print(f"{s} holds {n} replica(s)", flush=True)
                    printed[s] = n
            if not any(held.values()):
                break
        await asyncio.sleep(1.0)
    else:
        return fail(
            "store", "placement not done before the deadline; run it again", EXIT_UNAVAILABLE
        )
    if args.action == "remove":
        for store_id in wanted:
            code = await _set_state(request, urls, store_id, StoreState.REMOVED, deadline)
            if code != EXIT_OK:
                return code
            print(f"{store_id} removed", flush=True)
    print("placement done", file=sys.stderr)
    return EXIT_OK


async def _set_state(
    request: Request, urls: Mapping[str, str], store_id: str, state: StoreState, deadline: float
) -> int:
    """Set ``store_id``'s state through the first store that reaches the meta leader, asking
    again until ``deadline`` while none does (the meta group between leaders)."""
    loop = asyncio.get_running_loop()
    while True:
        for store in urls:
            try:
                status, body = await request(
                    "PUT", store, f"/raft/meta/stores/{store_id}", {"state": state.value}
                )
            except (TimeoutError, OSError, aiohttp.ClientError):
                continue
            if status == 200:
                return EXIT_OK
            if status == 409:
                return fail("store", str(body.get("error", body)), EXIT_MISSING)
        if loop.time() + RETRY_S >= deadline:
            return fail("store", "no store could reach the meta leader", EXIT_UNAVAILABLE)
        await asyncio.sleep(RETRY_S)


def _balanced(cmap: ClusterMap) -> bool:
    """Replicas and leaders within one over the stores that are up."""
    up = {s.store_id for s in cmap.live_stores()}
    if any(cmap.held_by(s) for s, i in cmap.stores.items() if i.state is not StoreState.UP):
        return False
    for counts in (cmap.replica_counts(), cmap.leader_counts()):
        held = [n for s, n in counts.items() if s in up]
        if held and max(held) - min(held) > 1:
            return False
    return True


def _print_stores(cmap: ClusterMap) -> None:
    replicas, leaders = cmap.replica_counts(), cmap.leader_counts()
    print(f"map version {cmap.version}: {cmap.groups} groups, replication {cmap.replication}")
    for store_id, info in sorted(cmap.stores.items()):
        print(
            f"{store_id} host={info.host_label} state={info.state.value} "
            f"replicas={replicas.get(store_id, 0)} leaders={leaders.get(store_id, 0)} "
            f"{'meta ' if cmap.holds_meta(store_id) else ''}{info.http_url}"
        )


async def _discover(args: argparse.Namespace) -> tuple[dict[str, str], int]:
    """Store id → URL of every store of the cluster (``/v1/shards`` of the first endpoint
    that answers: down stores included, so that the driver can count them down), and G."""
    async with make_client(args) as client:
        answers = await client.poll("/v1/shards", timeout_s=args.timeout)
    for _, body in answers:
        if isinstance(body, RaftcacheError):
            continue
        stores, groups = body.get("stores"), body.get("groups")
        if isinstance(stores, dict) and isinstance(groups, int) and groups > 1:
            return {str(k): str(v).rstrip("/") for k, v in stores.items()}, groups
    return {}, 0
