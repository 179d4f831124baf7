"""``raftcache store rebalance|drain``: move replicas between a sharded cluster's stores.

Rule: the command runs the placement driver (``raftcache.store.driver``) from the operator's
shell until placement has nothing left to do, printing each step on stdout as it completes;
progress and errors go to stderr. ``drain ID...`` empties those stores (decommissioning): when
it returns 0 they hold no replica and may be stopped. ``rebalance`` replaces replicas of stores
silent for ``--down-after`` seconds and evens out replicas and leaders over the stores. Every
step is idempotent: a command interrupted (Ctrl-C, a lost connection, a store killed) is simply
run again. Needs the cluster token (``--cluster-token`` or ``RAFTCACHE_CLUSTER_TOKEN``) when the
stores have one. Exit codes: 0 done, 3 not done within ``--deadline`` (or no store answered).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import aiohttp

from raftcache.cli.common import (
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
from raftcache.store.driver import PlacementDriver, http_requester

CLUSTER_TOKEN_ENV = "RAFTCACHE_CLUSTER_TOKEN"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "store",
        help="move replicas between stores",
        description="Move replicas between the stores of a sharded cluster (serve --groups).",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="rebalance|drain")
    for name, text in (
        ("rebalance", "replace replicas of stores that stay down; even out replicas and leaders"),
        ("drain", "move every replica off the given stores, so they can be stopped"),
    ):
        q = actions.add_parser(name, help=text, description=text)
        if name == "drain":
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
        unknown = sorted(set(getattr(args, "stores", ())) - set(urls))
        if unknown:
            return fail("store", f"no such store: {', '.join(unknown)}", EXIT_UNAVAILABLE)
        loop = asyncio.get_running_loop()
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
        deadline = loop.time() + args.deadline
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
