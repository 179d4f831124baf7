"""``raftcache shards``: the cluster map as the stores report it — slot ranges, groups, replicas
and leaders.

Rule: read-only and from the stores' own ``/v1/status`` (every endpoint, at once): a group's
leader and term are what its replicas report, the highest term winning (a replica that has not
heard of a newer election yet must not hide it). A one-group cluster is one row: every slot,
every voter. The table's title names the newest map version any store reports (its meta
section), so two runs can tell whether the map changed in between. Stdout is the table (or
``--json``, the rows alone); the exit code is 3 when no store answered.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from raftcache.cli.common import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    add_client_options,
    fail,
    make_client,
    run_async,
)
from raftcache.client.errors import RaftcacheError

COLUMNS = ("group", "slots", "replicas", "leader", "term", "applied")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "shards",
        help="show the cluster map",
        description="Show each data group: its hash slots, the stores holding its replicas, "
        "its leader and term, as the stores report them.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_client_options(p)
    p.set_defaults(func=cmd_shards)


def cmd_shards(args: argparse.Namespace) -> int:
    async def run() -> int:
        async with make_client(args) as client:
            results = await client.poll("/v1/status", timeout_s=args.timeout)
        statuses = [s for _, s in results if not isinstance(s, RaftcacheError)]
        if not statuses:
            return fail("shards", "no store answered", EXIT_UNAVAILABLE)
        rows = shard_rows(statuses)
        if args.json:
            print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        else:
            Console().print(shard_table(rows, map_version(statuses)))
        return EXIT_OK

    return run_async("shards", run())


def shard_rows(statuses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per group, merged over the stores' reports (see the module docstring)."""
    rows: dict[str, dict[str, Any]] = {}
    for status in statuses:
        groups = status.get("groups")
        if not isinstance(groups, list):  # a one-group node: the whole keyspace
            groups = [
                {
                    "group": "g0",
                    "slots": [0, 16383],
                    "hosted": True,
                    "members": status.get("members") or [],
                    "leader": status.get("leader"),
                    "term": status.get("term"),
                    "last_applied": status.get("last_applied"),
                    "role": status.get("role"),
                }
            ]
        for group in groups:
            if not isinstance(group, dict) or not isinstance(group.get("group"), str):
                continue
            row = rows.setdefault(
                group["group"],
                {
                    "group": group["group"],
                    "slots": group.get("slots"),
                    "replicas": sorted(group.get("members") or []),
                    "leader": None,
                    "term": None,
                    "applied": None,
                },
            )
            if not group.get("hosted"):
                continue
            term = group.get("term")
            if isinstance(term, int) and (row["term"] is None or term > row["term"]):
                row["term"], row["leader"] = term, None
                row["replicas"] = sorted(group.get("members") or row["replicas"])
            if term == row["term"] and group.get("leader") is not None:
                row["leader"] = group["leader"]
            if group.get("role") == "leader" and term == row["term"]:
                row["applied"] = group.get("last_applied")
    return sorted(rows.values(), key=lambda r: _group_number(r["group"]))


def map_version(statuses: list[dict[str, Any]]) -> int | None:
    """The newest cluster-map version the stores report (None: no meta group, or unknown)."""
    versions = [
        meta["map_version"]
        for status in statuses
        if isinstance(meta := status.get("meta"), dict)
        and isinstance(meta.get("map_version"), int)
        and not isinstance(meta.get("map_version"), bool)
    ]
    return max(versions, default=None)


def _group_number(group: str) -> tuple[int, str]:
    digits = group.lstrip("g")
    return (int(digits), group) if digits.isdigit() else (1 << 30, group)


def shard_table(rows: list[dict[str, Any]], version: int | None = None) -> Table:
    """A rich table of groups: slots, replicas, leader, term, applied; the map's ``version``
    in the title when known."""
    title = "raftcache shards" if version is None else f"raftcache shards (map version {version})"
    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in ("term", "applied") else "left")
    for row in rows:
        slots = row.get("slots")
        span = f"{slots[0]}-{slots[1]}" if isinstance(slots, list) and len(slots) == 2 else "-"
        leader = row.get("leader")
        cells = [
            Text(str(row["group"])),
            Text(span),
            Text(",".join(row.get("replicas") or []) or "-"),
            Text(str(leader) if leader else "none", style="bold green" if leader else "red"),
            Text("-" if row.get("term") is None else str(row["term"])),
            Text("-" if row.get("applied") is None else str(row["applied"])),
        ]
        table.add_row(*cells)
    return table
