"""One-shot data commands: ``set``, ``get``, ``del``, ``incr``, ``keys`` and ``status``.

Rule: each command is one client call whose result goes to stdout in a script-friendly form
(``get`` writes the raw value bytes; ``set`` the new version; ``incr`` the new value); messages
and errors go to stderr; the exit code follows ``common`` (a missing key: 1, for ``get`` and
``del`` alike).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from raftcache.cli.common import (
    EXIT_MISSING,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    add_client_options,
    describe,
    down_role,
    exit_code_for,
    fail,
    make_client,
    positive_float,
    positive_int,
    run_async,
    utf8_text,
    utf8_value,
)
from raftcache.client.errors import AuthError, RaftcacheError
from raftcache.vocabulary import CONSISTENCY_LEVELS

STATUS_COLUMNS = ("id", "url", "role", "term", "leader", "commit", "applied")


def add_parsers(subparsers: Any) -> None:
    """Register the data commands on the top-level ``subparsers``."""
    p = subparsers.add_parser("set", help="store a value", description="Store VALUE under KEY.")
    p.add_argument("key", type=utf8_text)
    p.add_argument(
        "value",
        type=utf8_value,
        help="the value (stored as UTF-8); '-' reads raw bytes from stdin",
    )
    p.add_argument("--ttl", type=positive_float, metavar="S", help="expire after S seconds")
    add_client_options(p)
    p.set_defaults(func=cmd_set)

    p = subparsers.add_parser(
        "get",
        help="print a value",
        description="Print the raw value of KEY (a newline after it only on a terminal); "
        "exit 1 if missing.",
    )
    p.add_argument("key", type=utf8_text)
    p.add_argument("--consistency", choices=CONSISTENCY_LEVELS, default=None)
    add_client_options(p)
    p.set_defaults(func=cmd_get)

    p = subparsers.add_parser(
        "del",
        help="delete a key",
        description="Delete KEY and print 'deleted'; exit 1 if missing, as get does.",
    )
    p.add_argument("key", type=utf8_text)
    add_client_options(p)
    p.set_defaults(func=cmd_del)

    p = subparsers.add_parser(
        "incr", help="increment a counter", description="Add N (default 1) to the counter KEY."
    )
    p.add_argument("key", type=utf8_text)
    p.add_argument("--by", type=int, default=1, metavar="N")
    add_client_options(p)
    p.set_defaults(func=cmd_incr)

    p = subparsers.add_parser("keys", help="list keys", description="List keys in key order.")
    p.add_argument("--prefix", type=utf8_text, default="")
    p.add_argument("--limit", type=positive_int, default=None, help="stop after N keys")
    add_client_options(p)
    p.set_defaults(func=cmd_keys)

    p = subparsers.add_parser(
        "status", help="show every node", description="Show the Raft status of every endpoint."
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_client_options(p)
    p.set_defaults(func=cmd_status)


def cmd_set(args: argparse.Namespace) -> int:
    value = sys.stdin.buffer.read() if args.value == "-" else args.value.encode("utf-8")

    async def run() -> int:
        async with make_client(args) as client:
            print(await client.set(args.key, value, args.ttl))
        return EXIT_OK

    return run_async("set", run(), write=True)


def cmd_get(args: argparse.Namespace) -> int:
    async def run() -> int:
        async with make_client(args) as client:
            value = await client.get(args.key, consistency=args.consistency)
        if value is None:
            return fail("get", f"key not found: {args.key}", EXIT_MISSING)
        sys.stdout.buffer.write(value)
        # Raw bytes for pipes; a newline only for a human at a terminal.
        if sys.stdout.isatty():
            sys.stdout.buffer.write(b"\n")
        sys.stdout.flush()
        return EXIT_OK

    return run_async("get", run())


def cmd_del(args: argparse.Namespace) -> int:
    async def run() -> int:
        async with make_client(args) as client:
            deleted = await client.delete(args.key)
        if not deleted:
            return fail("del", f"key not found: {args.key}", EXIT_MISSING)
        print("deleted")
        return EXIT_OK

    return run_async("del", run(), write=True)


def cmd_incr(args: argparse.Namespace) -> int:
    async def run() -> int:
        async with make_client(args) as client:
            print(await client.incr(args.key, args.by))
        return EXIT_OK

    return run_async("incr", run(), write=True)


def cmd_keys(args: argparse.Namespace) -> int:
    async def run() -> int:
        count = 0
        async with make_client(args) as client:
            async for key in client.iter_keys(args.prefix):
                print(key)
                count += 1
                if args.limit is not None and count >= args.limit:
                    break
        return EXIT_OK

    return run_async("keys", run())


def cmd_status(args: argparse.Namespace) -> int:
    async def run() -> int:
        async with make_client(args) as client:
            results = await client.poll("/v1/status", timeout_s=args.timeout)
        rows = [status_row(url, result) for url, result in results]
        if args.json:
            print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        else:
            Console().print(status_table(rows))
        errors = [result for _, result in results if isinstance(result, RaftcacheError)]
        if len(errors) == len(results):
            # A node that answered 401 is up: the token is what is wrong, say so.
            auth = [e for e in errors if isinstance(e, AuthError)]
            if auth:
                return fail("status", describe(auth[0]), exit_code_for(auth[0]))
            return fail("status", "no node answered", EXIT_UNAVAILABLE)
        return EXIT_OK

    return run_async("status", run())


def status_row(url: str, result: dict[str, Any] | RaftcacheError) -> dict[str, Any]:
    """One node's row: the status fields, or the error and ``role`` ``unreachable`` (or
    ``unauthorized``: the node answered 401/403)."""
    if isinstance(result, RaftcacheError):
        return {"url": url, "id": None, "role": down_role(result), "error": describe(result)}
    return {
        "id": result.get("id"),
        "url": url,
        "role": result.get("role"),
        "term": result.get("term"),
        "leader": result.get("leader"),
        "commit": result.get("commit_index"),
        "applied": result.get("last_applied"),
        "members": result.get("members"),
    }


_ROLE_STYLE = {"leader": "bold green", "follower": "cyan", "candidate": "yellow"}


def status_table(rows: list[dict[str, Any]]) -> Table:
    """A rich table of nodes: id, url, role, term, leader, commit, applied."""
    table = Table(title="raftcache cluster")
    numeric = ("term", "commit", "applied")
    for column in STATUS_COLUMNS:
        table.add_column(column, justify="right" if column in numeric else "left")
    for row in rows:
        # Text, not markup strings: node data must never be parsed as rich markup.
        cells = [Text("-" if row.get(c) is None else str(row[c])) for c in STATUS_COLUMNS]
        role = str(row.get("role"))
        cells[2] = Text(role, style=_ROLE_STYLE.get(role, "red"))
        table.add_row(*cells)
    return table
