"""``raftcache member list|add|remove`` and ``raftcache leader transfer``: a cluster's membership.

Rule: these commands only call the node's own membership routes (``POST /v1/members``, which
adds a learner and promotes it once caught up; ``DELETE /v1/members/{id}``; ``POST
/v1/leader/transfer``) and read ``/v1/status`` and ``/v1/stats``: every decision about what is
safe stays with the leader, and what it refuses (409) is printed in its own words, exit 2. The
command adds one guard of its own: removing the leader needs ``--force`` (hand leadership over
first with ``leader transfer``), so a typo never costs an election. On a sharded cluster the
placement driver owns each data group's members: ``member`` refuses and names ``raftcache
store``; ``leader transfer`` needs ``--group gN``. Exit codes follow ``common`` (1: not a member).
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from raftcache.cli.common import (
    EXIT_MISSING,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    add_client_options,
    fail,
    make_client,
    run_async,
    utf8_text,
)
from raftcache.client import AsyncClient
from raftcache.client.errors import IndeterminateError, RaftcacheError

#: ``member add`` waits for the learner to catch up before it is promoted: the leader gives up
#: after at least 30 s (``RaftNode.add_member``), so the default deadline leaves room for that.
ADD_TIMEOUT_S = 60.0

MEMBER_COLUMNS = ("id", "address", "role", "lag")


class RefusedError(Exception):
    """A request the command refuses before sending it: the message and the exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def add_parsers(subparsers: Any) -> None:
    """Register ``member`` and ``leader`` on the top-level ``subparsers``."""
    p = subparsers.add_parser(
        "member",
        help="list, add or remove cluster members",
        description="The voters and learners of a (one-group) cluster; add or remove one.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="list|add|remove")
    q = actions.add_parser(
        "list",
        help="voters and learners: id, address, role, lag behind the leader",
        description="Every voter and learner as the leader sees it: id, address, role "
        "(leader, voter, learner) and lag (log entries behind the leader's last one).",
    )
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_client_options(q)
    q.set_defaults(func=cmd_member)

    q = actions.add_parser(
        "add",
        help="add a node: a learner first, a voter once caught up",
        description="Add node ID, reached at URL: the leader adds it as a learner, sends it "
        "the data and promotes it to voter once it has caught up; the command returns then. "
        "Start the node first (with an empty data directory).",
    )
    q.add_argument("id", type=utf8_text, metavar="ID")
    q.add_argument("url", type=utf8_text, metavar="URL", help="where the others reach it")
    add_client_options(q)
    q.set_defaults(func=cmd_member, timeout=ADD_TIMEOUT_S)

    q = actions.add_parser(
        "remove",
        help="remove a voter or learner",
        description="Remove node ID from the cluster. The leader refuses a change that would "
        "leave the voters without a quorum it has heard from recently. Removing the leader "
        "itself needs --force (it steps down once the removal commits); better hand "
        "leadership over first with `raftcache leader transfer`.",
    )
    q.add_argument("id", type=utf8_text, metavar="ID")
    q.add_argument("--force", action="store_true", help="remove it even if it is the leader")
    add_client_options(q)
    q.set_defaults(func=cmd_member)

    p = subparsers.add_parser(
        "leader",
        help="hand leadership over",
        description="Leadership of the cluster (of one group, on a sharded cluster).",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="transfer")
    q = actions.add_parser(
        "transfer",
        help="hand leadership to another voter; prints the new leader",
        description="Ask the leader to hand over to voter ID (default: the most up-to-date "
        "one) and print the new leader once it leads.",
    )
    q.add_argument("--to", type=utf8_text, metavar="ID", default=None)
    q.add_argument(
        "--group",
        type=utf8_text,
        metavar="gN",
        default=None,
        help="on a sharded cluster: the data group whose leader moves",
    )
    add_client_options(q)
    q.set_defaults(func=cmd_leader_transfer)


def cmd_member(args: argparse.Namespace) -> int:
    command = f"member {args.action}"
    return run_async(command, _guarded(command, _member(args)), write=args.action != "list")


def cmd_leader_transfer(args: argparse.Namespace) -> int:
    return run_async("leader transfer", _guarded("leader transfer", _transfer(args)), write=True)


async def _guarded(command: str, coro: Any) -> int:
    """Run ``coro``; a ``RefusedError`` becomes its message and code, a 409 the leader's words."""
    try:
        code: int = await coro
    except RefusedError as refused:
        return fail(command, str(refused), refused.code)
    except RaftcacheError as exc:
        if exc.status == 409:
            return fail(command, server_message(exc), EXIT_USAGE)
        raise
    return code


def server_message(error: RaftcacheError) -> str:
    """The server's own text (``body["error"]``), without the client's request prefix."""
    detail = error.body.get("error") if error.body else None
    return str(detail) if detail else str(error)


async def _member(args: argparse.Namespace) -> int:
    async with make_client(args) as client:
        status = await leader_status(client)
        if args.action == "list":
            return await _list(args, client, status)
        if args.action == "add":
            done = await client.add_member(args.id, args.url)
            print(f"added {args.id} {args.url}: voters {' '.join(done.get('members', []))}")
            return EXIT_OK
        known = [*status.get("members", []), *status.get("learners", [])]
        if args.id not in known:
            listed = ", ".join(known)
            raise RefusedError(f"not a member: {args.id} (members: {listed})", EXIT_MISSING)
        if args.id == status.get("leader") and not args.force:
            raise RefusedError(
                f"{args.id} is the leader: hand leadership over first (raftcache leader "
                f"transfer), or pass --force (it steps down once its removal commits)"
            )
        done = await client.remove_member(args.id)
        print(f"removed {args.id}: voters {' '.join(done.get('members', []))}")
        return EXIT_OK


async def leader_status(client: AsyncClient) -> dict[str, Any]:
    """``/v1/status`` of the leader (asked directly when the node that answered first is a
    follower that knows it). Refused on a sharded cluster, whose groups the driver manages."""
    status = await client.status()
    sharding = status.get("sharding")
    if isinstance(sharding, dict):
        raise RefusedError(
            f"this is a sharded cluster ({sharding.get('groups')} data groups): the placement "
            "driver owns each group's members; manage stores with `raftcache store "
            "list|drain|remove|rebalance` (docs/sharding.md)"
        )
    leader = status.get("leader")
    if leader is None:
        raise RefusedError("no leader: the cluster has no quorum right now", EXIT_UNAVAILABLE)
    if status.get("role") != "leader":
        url = (status.get("addresses") or {}).get(leader)
        if url:
            status = await client.status(url)
    return status


async def _list(args: argparse.Namespace, client: AsyncClient, status: dict[str, Any]) -> int:
    lag: dict[str, int] = {}
    if status.get("role") == "leader":
        url = (status.get("addresses") or {}).get(status["id"])
        raft = (await client.stats(url)).get("raft", {})
        lag = raft.get("follower_lag") or {}
    rows = member_rows(status, lag)
    if args.json:
        print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
    else:
        Console().print(member_table(rows))
    return EXIT_OK


def member_rows(status: dict[str, Any], lag: dict[str, int]) -> list[dict[str, Any]]:
    """One row per voter then learner: id, address, role, lag (0 for the leader itself; None
    when the leader's figures were not available)."""
    addresses = status.get("addresses") or {}
    leader = status.get("leader")
    rows = []
    voters, learners = status.get("members", []), status.get("learners", [])
    for role, ids in (("voter", voters), ("learner", learners)):
        for node_id in ids:
            rows.append(
                {
                    "id": node_id,
                    "address": addresses.get(node_id),
                    "role": "leader" if node_id == leader else role,
                    "lag": 0 if node_id == leader and lag else lag.get(node_id),
                }
            )
    return rows


_ROLE_STYLE = {"leader": "bold green", "voter": "cyan", "learner": "yellow"}


def member_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="raftcache members")
    for column in MEMBER_COLUMNS:
        table.add_column(column, justify="right" if column == "lag" else "left")
    for row in rows:
        # Text, not markup strings: node data must never be parsed as rich markup.
        cells = [Text("-" if row.get(c) is None else str(row[c])) for c in MEMBER_COLUMNS]
        cells[2].stylize(_ROLE_STYLE.get(str(row["role"]), ""))
        table.add_row(*cells)
    return table


async def _transfer(args: argparse.Namespace) -> int:
    async with make_client(args) as client:
        status = await client.status()
        sharding = status.get("sharding")
        if isinstance(sharding, dict) and args.group is None:
            raise RefusedError(
                f"this is a sharded cluster ({sharding.get('groups')} data groups): name the "
                "group whose leader moves with --group gN"
            )
        try:
            done = await client.transfer_leadership(args.to, group=args.group)
        except IndeterminateError:
            # The leader waited and gave up (504): the target did not take over in time.
            now = (await client.status()).get("leader")
            target = args.to or "another voter"
            raise RefusedError(
                f"leadership transfer to {target} did not complete (is it up and caught up?); "
                f"the leader is {now or 'not known'}",
                EXIT_UNAVAILABLE,
            ) from None
        print(f"leader {done.get('leader')}")
        return EXIT_OK
