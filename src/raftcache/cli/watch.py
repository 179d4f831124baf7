"""``raftcache watch``: print the changes under a prefix as they commit, one line each.

Rule: one line per change, flushed at once, so a pipe (``| jq``, ``| while read``) sees each
change as it happens. ``--format text`` (default) is for people: ``VERSION TYPE KEY [VALUE]``;
``--format json`` is one JSON object per line for programs, with the value as UTF-8 text when it
is valid UTF-8 and as ``value_base64`` otherwise. The client's watch resumes across node
failures with no gap and no duplicate; history the cluster no longer has (410) ends the command
with exit code 2 and the version to re-read at. ``--count N`` stops after N changes (exit 0);
Ctrl-C stops it too (exit 0).

On a sharded cluster every group's changes come merged (each group's in its own order): text
lines start with ``GROUP:VERSION``, JSON lines carry ``group``; ``--from-version`` takes a
resume token (``g0:N,g1:M,…``, what a 410 names and the stream's ids are) as well as a version.
"""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any

import orjson

from raftcache.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    add_client_options,
    fail,
    make_client,
    positive_float,
    positive_int,
    run_async,
    utf8_text,
)
from raftcache.client.watch import WatchCompactedError, WatchEvent, check_from_version


def add_parser(subparsers: Any) -> None:
    """Register ``watch`` on the top-level ``subparsers``."""
    p = subparsers.add_parser(
        "watch",
        help="print changes under a prefix as they commit",
        description="Print every set, delete, expiry and eviction under PREFIX, in commit order.",
    )
    p.add_argument(
        "prefix", nargs="?", type=utf8_text, default="", help="key prefix (default: every key)"
    )
    p.add_argument(
        "--from-version",
        default=None,
        metavar="N",
        help="start after version N (a log index; on a sharded cluster also a resume token "
        "g0:N,g1:M,…; default: changes from now on)",
    )
    p.add_argument("--count", type=positive_int, default=None, metavar="N", help="stop after N")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument(
        "--give-up-after",
        type=positive_float,
        default=60.0,
        metavar="S",
        help="stop when no node could be reached for S seconds (default 60)",
    )
    add_client_options(p)
    p.set_defaults(func=cmd_watch)


def event_line(event: WatchEvent, fmt: str) -> str:
    """One change as the line ``--format`` asks for."""
    if fmt == "json":
        obj: dict[str, Any] = {"version": event.version, "type": event.type, "key": event.key}
        if event.group is not None:
            obj["group"] = event.group
        if event.value is not None:
            try:
                obj["value"] = event.value.decode("utf-8")
            except UnicodeDecodeError:
                obj["value_base64"] = base64.b64encode(event.value).decode("ascii")
        if event.expires_at is not None:
            obj["expires_at"] = event.expires_at
        return orjson.dumps(obj).decode("utf-8")
    version = str(event.version) if event.group is None else f"{event.group}:{event.version}"
    parts = [version, event.type, event.key]
    if event.value is not None:
        parts.append(event.value.decode("utf-8", "backslashreplace"))
    return " ".join(parts)


def cmd_watch(args: argparse.Namespace) -> int:
    try:
        start = check_from_version(args.from_version)
    except ValueError:
        return fail("watch", "--from-version must be a version >= 0 or a resume token", EXIT_USAGE)

    async def run() -> int:
        seen = 0
        async with make_client(args) as client:
            watch = client.watch(args.prefix, from_version=start, give_up_after=args.give_up_after)
            try:
                async for event in watch:
                    sys.stdout.write(event_line(event, args.format) + "\n")
                    sys.stdout.flush()
                    seen += 1
                    if args.count is not None and seen >= args.count:
                        break
            except WatchCompactedError as exc:
                return fail(
                    "watch",
                    f"{exc}; re-read and watch from version {exc.token}",
                    EXIT_USAGE,
                )
            finally:
                await watch.aclose()
        return EXIT_OK

    try:
        return run_async("watch", run())
    except KeyboardInterrupt:
        return EXIT_OK
