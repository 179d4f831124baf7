"""``raftcache bench``: a closed-loop load generator over the ``AsyncClient``.

Rule: N workers (``--connections``) each issue one request at a time, back to back, until the
duration ends; every request's latency — the client's, retries included, as an application sees
it — is recorded per operation. Failed requests are counted by error type, not timed. The
workload is seeded (keys and the read/write mix), so two runs send the same requests. Reported
percentiles use the nearest-rank method on all recorded latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from raftcache.cli.common import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    add_client_options,
    fail,
    make_client,
    positive_float,
    positive_int,
    run_async,
    utf8_text,
)
from raftcache.client import AsyncClient
from raftcache.client.errors import RaftcacheError
from raftcache.vocabulary import CONSISTENCY_LEVELS


@dataclass(slots=True)
class Recorder:
    """Latencies (seconds) per operation and error counts per error type."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str | None = None

    def ok(self, op: str, seconds: float) -> None:
        self.latencies.setdefault(op, []).append(seconds)

    def failed(self, op: str, error: Exception) -> None:
        self.errors[f"{op}: {type(error).__name__}"] += 1
        if self.first_error is None:
            self.first_error = f"{op}: {error}"

    @property
    def total_ops(self) -> int:
        return sum(len(v) for v in self.latencies.values())


@dataclass(frozen=True, slots=True)
class OpSummary:
    op: str
    ops: int
    ops_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(math.ceil(fraction * len(sorted_values)), 1)
    return sorted_values[rank - 1]


def summarize(recorder: Recorder, elapsed_s: float) -> list[OpSummary]:
    """One row per operation plus an ``all`` row, latencies in milliseconds."""
    rows: list[OpSummary] = []
    groups = dict(sorted(recorder.latencies.items()))
    groups["all"] = [x for values in groups.values() for x in values]
    for op, values in groups.items():
        ordered = sorted(values)
        errors = sum(
            n for name, n in recorder.errors.items() if op == "all" or name.startswith(f"{op}:")
        )
        rows.append(
            OpSummary(
                op=op,
                ops=len(ordered),
                ops_per_s=len(ordered) / elapsed_s if elapsed_s > 0 else 0.0,
                p50_ms=percentile(ordered, 0.50) * 1000,
                p90_ms=percentile(ordered, 0.90) * 1000,
                p99_ms=percentile(ordered, 0.99) * 1000,
                max_ms=(ordered[-1] if ordered else 0.0) * 1000,
                errors=errors,
            )
        )
    return rows


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "bench",
        help="load generator with a latency table",
        description="Drive the cluster with concurrent requests and report throughput and "
        "latency percentiles.",
    )
    p.add_argument("--op", choices=("set", "get", "mixed"), default="mixed")
    p.add_argument("--connections", type=positive_int, default=16, help="concurrent workers")
    p.add_argument("--duration", type=positive_float, default=10.0, metavar="S")
    p.add_argument("--value-size", type=positive_int, default=100, metavar="B")
    p.add_argument("--keys", type=positive_int, default=1000, metavar="K", help="key space size")
    p.add_argument(
        "--read-ratio", type=_ratio, default=0.8, help="share of gets in --op mixed (default 0.8)"
    )
    p.add_argument("--consistency", choices=CONSISTENCY_LEVELS, default=None)
    p.add_argument("--prefix", type=utf8_text, default="bench:", help="key prefix (default bench:)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    add_client_options(p)
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    return run_async("bench", _bench(args))


async def _bench(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    value = random.Random(args.seed).randbytes(args.value_size)
    keys = [f"{args.prefix}{i}" for i in range(args.keys)]
    async with make_client(args, max_connections=args.connections) as client:
        if args.op != "set":
            await _prefill(client, keys, value, args.connections, console)
        recorder = Recorder()
        elapsed = await _drive(client, args, keys, value, recorder, console)
    rows = summarize(recorder, elapsed)
    Console().print(results_table(rows, args, elapsed))
    if recorder.first_error:
        console.print(f"first error: {recorder.first_error}", markup=False)
    if args.json:
        report = {"options": _options(args), "elapsed_s": elapsed, "results": rows}
        _write_json(args.json, report)
    if recorder.total_ops == 0:
        return fail("bench", "no request succeeded", EXIT_UNAVAILABLE)
    return EXIT_OK


async def _prefill(
    client: AsyncClient, keys: list[str], value: bytes, workers: int, console: Console
) -> None:
    """Write every key once so that gets hit; errors here abort the run."""
    queue = list(reversed(keys))
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("prefill", total=len(keys))

        async def worker() -> None:
            while queue:
                await client.set(queue.pop(), value)
                progress.advance(task)

        await asyncio.gather(*(worker() for _ in range(min(workers, len(keys)))))


async def _drive(
    client: AsyncClient,
    args: argparse.Namespace,
    keys: list[str],
    value: bytes,
    recorder: Recorder,
    console: Console,
) -> float:
    """Run the workers for ``--duration`` seconds under a progress bar; returns elapsed s."""
    started = time.perf_counter()
    deadline = started + args.duration
    read_ratio = {"get": 1.0, "set": 0.0}.get(args.op, args.read_ratio)

    async def worker(index: int) -> None:
        rng = random.Random(args.seed * 1_000_003 + index)
        while time.perf_counter() < deadline:
            key = keys[rng.randrange(len(keys))]
            op = "get" if rng.random() < read_ratio else "set"
            t0 = time.perf_counter()
            try:
                if op == "get":
                    await client.get(key, consistency=args.consistency)
                else:
                    await client.set(key, value)
            except RaftcacheError as exc:
                recorder.failed(op, exc)
                continue
            recorder.ok(op, time.perf_counter() - t0)

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[rate]}"))
    with Progress(*columns, TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task(f"bench {args.op}", total=args.duration, rate="")
        workers = asyncio.gather(*(worker(i) for i in range(args.connections)))
        while not workers.done():
            await asyncio.wait([workers], timeout=0.25)
            now = time.perf_counter()
            ops = recorder.total_ops
            rate = f"{ops} ops, {ops / max(now - started, 1e-9):,.0f} ops/s"
            progress.update(task, completed=min(now - started, args.duration), rate=rate)
        workers.result()
    return time.perf_counter() - started


def results_table(rows: list[OpSummary], args: argparse.Namespace, elapsed: float) -> Table:
    title = (
        f"bench {args.op}: {args.connections} connections, {elapsed:.1f} s, "
        f"{args.value_size} B values, {args.keys} keys"
    )
    table = Table(title=title)
    for column in ("op", "ops", "ops/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"):
        table.add_column(column, justify="left" if column == "op" else "right")
    for r in rows:
        table.add_row(
            r.op,
            str(r.ops),
            f"{r.ops_per_s:,.0f}",
            *(f"{x:.2f}" for x in (r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms)),
            str(r.errors),
        )
    return table


def _write_json(path: str, report: dict[str, Any]) -> None:
    Path(path).write_bytes(orjson.dumps(report, default=asdict, option=orjson.OPT_INDENT_2))


def _options(args: argparse.Namespace) -> dict[str, Any]:
    names = ("op", "connections", "duration", "value_size", "keys", "read_ratio", "seed")
    return {name: getattr(args, name) for name in names}


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1]: {text!r}")
    return value
