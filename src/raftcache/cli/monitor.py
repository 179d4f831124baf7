"""``raftcache monitor``: a live view of the cluster from successive polls of every node.

Rule: sampling (I/O) and viewing (pure) are separate. ``collect`` polls ``/v1/status`` and
``/v1/stats`` of every endpoint once; ``build_view`` turns the previous and current samples into
numbers — rates are differences of counters over the time between the two polls (writes/s from the
commit index, reads/s from cache hits + misses), lag is how far a node's applied index trails the
leader's commit index — and ``render`` only draws them. So every number on screen is testable
without a cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from raftcache.cli.common import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    UNAUTHORIZED,
    add_client_options,
    describe,
    down_role,
    fail,
    make_client,
    positive_float,
    positive_int,
    run_async,
)
from raftcache.client import AsyncClient
from raftcache.client.errors import RaftcacheError


@dataclass(frozen=True, slots=True)
class NodeSample:
    """One node's answers in one poll (``status`` empty when it did not answer;
    ``unauthorized`` when it refused our token: it is up, the token is wrong)."""

    url: str
    status: dict[str, Any]
    stats: dict[str, Any]
    rtt_ms: float | None
    error: str | None = None
    unauthorized: bool = False


@dataclass(frozen=True, slots=True)
class Sample:
    """One poll of every endpoint; ``t`` is a monotonic time in seconds, ``wall`` the epoch."""

    t: float
    wall: float
    nodes: list[NodeSample]


@dataclass(frozen=True, slots=True)
class NodeView:
    id: str | None
    url: str
    role: str
    term: int | None
    commit: int | None
    applied: int | None
    lag: int | None
    reads_per_s: float | None
    rtt_ms: float | None
    replication_ms: float | None
    error: str | None


@dataclass(frozen=True, slots=True)
class ClusterView:
    wall: float
    leader: str | None
    term: int | None
    up: int
    total: int
    writes_per_s: float | None
    reads_per_s: float | None
    max_lag: int | None
    nodes: list[NodeView]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "monitor",
        help="live view of the cluster",
        description="Poll every node and show leader, terms, roles, commit/applied indexes, "
        "follower lag, throughput and latency.",
    )
    p.add_argument("--interval", type=positive_float, default=1.0, metavar="S", help="poll period")
    p.add_argument("--compact", action="store_true", help="one line per node")
    p.add_argument("--json", metavar="FILE", help="append every sample as a JSON line to FILE")
    p.add_argument("--once", action="store_true", help="poll once, print, exit")
    p.add_argument("--count", type=positive_int, default=None, help="stop after N polls")
    add_client_options(p)
    p.set_defaults(func=cmd_monitor)


def cmd_monitor(args: argparse.Namespace) -> int:
    try:
        return run_async("monitor", _monitor(args))
    except KeyboardInterrupt:
        return EXIT_OK  # Ctrl-C is how one leaves a live view, not a failure


async def _monitor(args: argparse.Namespace) -> int:
    console = Console()
    polls = 1 if args.once else args.count
    live_screen = console.is_terminal and not args.once
    async with make_client(args) as client:
        previous: Sample | None = None
        view: ClusterView | None = None
        live_view = Live(console=console, auto_refresh=False) if live_screen else None
        with live_view or contextlib.nullcontext() as live:
            done = 0
            while polls is None or done < polls:
                if done:
                    await asyncio.sleep(args.interval)
                sample = await collect(client, time.monotonic, time.time, args.timeout)
                view = build_view(previous, sample)
                previous, done = sample, done + 1
                if args.json:
                    append_json_line(args.json, asdict(view))
                if live is not None:
                    live.update(render(view, args.compact, console.width), refresh=True)
                else:
                    console.print(render(view, args.compact, console.width))
                if _all_unauthorized(sample):
                    break  # polling again cannot help: the token is wrong
    if view is not None and view.up == 0:
        if previous is not None and _all_unauthorized(previous):
            return fail("monitor", UNAUTHORIZED, EXIT_USAGE)
        return fail("monitor", "no node answered", EXIT_UNAVAILABLE)
    return EXIT_OK


def _all_unauthorized(sample: Sample) -> bool:
    return bool(sample.nodes) and all(n.unauthorized for n in sample.nodes)


def append_json_line(path: str, record: dict[str, Any]) -> None:
    """Append one sample to the export file (a line each: easy to tail and to parse)."""
    with open(path, "ab") as out:
        out.write(orjson.dumps(record) + b"\n")


async def collect(
    client: AsyncClient, clock: Callable[[], float], wall: Callable[[], float], timeout_s: float
) -> Sample:
    """Poll status and stats of every endpoint concurrently, timing each status request."""

    async def one(url: str) -> NodeSample:
        started = clock()
        ((_, status),) = await client.transport.poll([url], "/v1/status", timeout_s=timeout_s)
        rtt_ms = (clock() - started) * 1000.0
        if isinstance(status, RaftcacheError):
            unauthorized = down_role(status) == "unauthorized"
            return NodeSample(url, {}, {}, None, describe(status), unauthorized)
        ((_, stats),) = await client.transport.poll([url], "/v1/stats", timeout_s=timeout_s)
        return NodeSample(url, status, {} if isinstance(stats, RaftcacheError) else stats, rtt_ms)

    t = clock()
    nodes = await asyncio.gather(*(one(url) for url in client.endpoints))
    return Sample(t, wall(), list(nodes))


def build_view(previous: Sample | None, current: Sample) -> ClusterView:
    """Numbers for the screen from two successive samples (rates need ``previous``)."""
    up = [n for n in current.nodes if n.error is None]
    leader = _leader_sample(up)
    commit = _int(leader.status.get("commit_index")) if leader else _max_int(up, "commit_index")
    dt = current.t - previous.t if previous is not None else 0.0
    before = {n.url: n for n in previous.nodes} if previous is not None else {}
    nodes = [_node_view(n, before.get(n.url), leader, commit, dt) for n in current.nodes]
    lags = [v.lag for v in nodes if v.lag is not None]
    reads = [v.reads_per_s for v in nodes if v.reads_per_s is not None]
    writes: float | None = None
    if previous is not None and dt > 0 and commit is not None:
        old = _max_int([n for n in previous.nodes if n.error is None], "commit_index")
        writes = max(commit - old, 0) / dt if old is not None else None
    return ClusterView(
        wall=current.wall,
        leader=_str(leader.status.get("id")) if leader else None,
        term=_int(leader.status.get("term")) if leader else _max_int(up, "term"),
        up=len(up),
        total=len(current.nodes),
        writes_per_s=writes,
        reads_per_s=sum(reads) if reads else None,
        max_lag=max(lags) if lags else None,
        nodes=nodes,
    )


def _node_view(
    node: NodeSample,
    before: NodeSample | None,
    leader: NodeSample | None,
    commit: int | None,
    dt: float,
) -> NodeView:
    applied = _int(node.status.get("last_applied"))
    node_id = _str(node.status.get("id"))
    reads: float | None = None
    if before is not None and before.error is None and dt > 0 and node.error is None:
        now, then = _reads(node.stats), _reads(before.stats)
        if now is not None and then is not None:
            reads = max(now - then, 0) / dt
    replication = None
    if leader is not None and node_id is not None and node is not leader:
        latencies = leader.stats.get("raft", {}).get("replication_latency_ms", {})
        replication = _number(latencies.get(node_id)) if isinstance(latencies, dict) else None
    return NodeView(
        id=node_id,
        url=node.url,
        role=_str(node.status.get("role"))
        or ("unauthorized" if node.unauthorized else "unreachable"),
        term=_int(node.status.get("term")),
        commit=_int(node.status.get("commit_index")),
        applied=applied,
        lag=max(commit - applied, 0) if commit is not None and applied is not None else None,
        reads_per_s=reads,
        rtt_ms=node.rtt_ms,
        replication_ms=replication,
        error=node.error,
    )


def render(view: ClusterView, compact: bool = False, width: int = 200) -> RenderableType:
    """The header line and the node table (or one line per node when ``compact``).

    Below ``WIDE`` columns the url column is left out: the numbers matter more.
    """
    stamp = time.strftime("%H:%M:%S", time.localtime(view.wall))
    header = Text.assemble(
        (f"{stamp}  ", "dim"),
        ("leader ", "bold"),
        (view.leader or "none", "green" if view.leader else "bold red"),
        f"  term {_fmt(view.term)}  up {view.up}/{view.total}",
        f"  writes/s {_fmt(view.writes_per_s)}  reads/s {_fmt(view.reads_per_s)}",
        f"  max lag {_fmt(view.max_lag)}",
    )
    if compact:
        lines = [header]
        for n in view.nodes:
            lines.append(
                Text(
                    f"  {n.id or n.url} {n.role[:1].upper()} t{_fmt(n.term)} c{_fmt(n.commit)} "
                    f"a{_fmt(n.applied)} lag {_fmt(n.lag)} rtt {_fmt(n.rtt_ms)}ms"
                )
            )
        return Group(*lines)
    table = Table(show_edge=False)
    with_url = width >= WIDE
    columns = ("id", "url", "role", "term", "commit", "applied", "lag", "reads/s", "rtt ms")
    for column in (*columns, "repl ms"):
        if column == "url" and not with_url:
            continue
        left = column in ("id", "url", "role")
        table.add_column(
            column, justify="left" if left else "right", no_wrap=True, min_width=len(column)
        )
    for n in view.nodes:
        role = Text(n.role, style=_ROLE_STYLE.get(n.role, "red"))
        numbers = (n.term, n.commit, n.applied, n.lag, n.reads_per_s, n.rtt_ms, n.replication_ms)
        name = n.id or ("-" if with_url else n.url.split("://")[-1])
        cells = [Text(name), *([Text(n.url)] if with_url else []), role]
        table.add_row(*cells, *(Text(_fmt(x)) for x in numbers))
    return Group(header, table)


WIDE = 110
_ROLE_STYLE = {"leader": "bold green", "follower": "cyan", "candidate": "yellow"}


def _leader_sample(nodes: list[NodeSample]) -> NodeSample | None:
    leaders = [n for n in nodes if n.status.get("role") == "leader"]
    # Two claimants during a term change: the higher term is the real one.
    return max(leaders, key=lambda n: _int(n.status.get("term")) or 0, default=None)


def _reads(stats: dict[str, Any]) -> int | None:
    cache = stats.get("cache")
    if not isinstance(cache, dict):
        return None
    hits, misses = _int(cache.get("hits")), _int(cache.get("misses"))
    return None if hits is None or misses is None else hits + misses


def _number(value: Any) -> float | None:
    """A latency given as a number, or as a summary mapping (p50 / mean / last)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        for key in ("p50", "mean", "avg", "last"):
            if isinstance(value.get(key), int | float):
                return float(value[key])
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _max_int(nodes: list[NodeSample], field: str) -> int | None:
    values = [v for v in (_int(n.status.get(field)) for n in nodes) if v is not None]
    return max(values) if values else None


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)
