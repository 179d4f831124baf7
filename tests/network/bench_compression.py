"""Benchmark: a 100 MB snapshot of cache data sent over HttpNetwork, per coding and body format.

Not collected by pytest (a benchmark measures, it asserts nothing). Run it with::

    .venv/bin/python -m tests.network.bench_compression [--mb 100] [--chunk-kib 1024]

The snapshot mimics the cache's own format (``raftcache.cache.snapshot``: a msgpack map whose
``entries`` are runs of ``key, record`` where a record is a 16-byte header then the value) over
a seeded mix of values: JSON documents (sessions, profiles), HTML/text fragments, decimal
counters, random tokens and random binary blobs (already-compressed media: incompressible).
It is sent as InstallSnapshot chunks, one at a time as the leader does, between two nodes on
loopback; the figures are bytes on the wire and wall time, for each combination.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import struct
import time
from typing import Any

import msgpack
import orjson

from raftcache.network import HttpNetwork, compression
from raftcache.raft.messages import (
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    RequestVoteResponse,
)

WORDS = [
    "the",
    "cache",
    "of",
    "a",
    "user",
    "session",
    "holds",
    "profile",
    "data",
    "preferences",
    "cart",
    "items",
    "recent",
    "views",
    "search",
    "results",
    "rendered",
    "fragments",
    "feature",
    "flags",
    "rate",
    "limits",
    "tokens",
    "and",
    "counters",
    "for",
    "every",
    "request",
    "served",
    "by",
    "the",
    "api",
    "gateway",
    "in",
    "front",
    "of",
    "the",
    "catalogue",
    "checkout",
    "and",
    "account",
]


def _document(rng: random.Random, i: int) -> bytes:
    doc = {
        "id": i,
        "name": f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()}",
        "email": f"user{i}@example.com",
        "roles": rng.sample(["admin", "editor", "viewer", "billing", "support"], 2),
        "last_login": 1_700_000_000 + rng.randrange(10**7),
        "prefs": {"lang": rng.choice(["en", "fr", "de"]), "tz": "Europe/Paris", "dark": True},
        "cart": [{"sku": f"SKU-{rng.randrange(10**5)}", "qty": rng.randrange(1, 5)}]
        * rng.randrange(0, 6),
        "bio": " ".join(rng.choices(WORDS, k=rng.randrange(10, 120))),
    }
    return orjson.dumps(doc)


def _fragment(rng: random.Random) -> bytes:
    items = "".join(
        f'<li class="item"><a href="/p/{rng.randrange(10**6)}">{rng.choice(WORDS)}</a></li>'
        for _ in range(rng.randrange(5, 60))
    )
    return f'<div class="results"><ul>{items}</ul></div>'.encode()


def _value(rng: random.Random, i: int) -> bytes:
    kind = rng.random()
    if kind < 0.35:
        return _document(rng, i)
    if kind < 0.55:
        return _fragment(rng)
    if kind < 0.70:
        return str(rng.randrange(10**9)).encode()
    if kind < 0.85:
        return base64.urlsafe_b64encode(rng.randbytes(rng.randrange(24, 48)))
    return rng.randbytes(rng.randrange(1024, 8192))  # media, already compressed


def snapshot_bytes(size: int, seed: int = 1) -> bytes:
    """A msgpack snapshot of about ``size`` bytes in the cache's format."""
    rng = random.Random(seed)
    runs: list[list[Any]] = []
    run: list[Any] = []
    total, i = 0, 0
    while total < size:
        key = f"{rng.choice(['user', 'session', 'page', 'rate', 'token', 'img'])}:{i}"
        header = struct.pack(">Qd", rng.randrange(1, 10**7), 0.0)
        record = header + _value(rng, i)
        run += [key, record]
        total += len(key) + len(record)
        i += 1
        if len(run) >= 2048:
            runs.append(run)
            run = []
    runs.append(run)
    counters = {"evictions": 0, "expirations": 0, "bytes_peak": total, "sessions_dropped": 0}
    state = {"format": 1, "index": i, "counters": counters, "sessions": [], "entries": runs}
    packed: bytes = msgpack.packb(state)
    return packed


class Sink:
    """Handlers that acknowledge every snapshot chunk and keep nothing."""

    async def handle_install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
        return InstallSnapshotResponse(req.term, True, req.offset + len(req.data))

    async def handle_request_vote(self, req: Any) -> RequestVoteResponse:
        return RequestVoteResponse(req.term, True)

    async def handle_append_entries(self, req: Any) -> Any:
        raise NotImplementedError


async def transfer(data: bytes, chunk: int, **opts: Any) -> tuple[int, float]:
    """Send ``data`` as InstallSnapshot chunks; (bytes on the wire, seconds)."""
    b = HttpNetwork("b", port=0, node_addresses={})
    b.register_handlers(Sink())
    await b.start()
    a = HttpNetwork("a", port=0, node_addresses={"b": f"http://127.0.0.1:{b.port}"}, **opts)
    a.register_handlers(Sink())
    await a.start()
    try:
        # One small exchange first so that `a` learns what `b` reads, as in a running cluster.
        await a.send_request_vote("b", _vote())
        started = time.perf_counter()
        for offset in range(0, len(data), chunk):
            piece = data[offset : offset + chunk]
            done = offset + chunk >= len(data)
            req = InstallSnapshotRequest(1, "a", 10**6, 1, offset, piece, done)
            await a.send_install_snapshot("b", req)
        elapsed = time.perf_counter() - started
        return a.metrics.rpc("outbound", "InstallSnapshot", "b").bytes_sent, elapsed
    finally:
        await a.stop()
        await b.stop()


def _vote() -> Any:
    from raftcache.raft.messages import RequestVoteRequest

    return RequestVoteRequest(1, "a", 0, 0)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=100.0)
    parser.add_argument("--chunk-kib", type=int, default=1024)
    args = parser.parse_args()
    data = snapshot_bytes(int(args.mb * 1_000_000))
    chunk = args.chunk_kib * 1024
    print(f"snapshot: {len(data) / 1e6:.1f} MB of msgpack, chunks of {args.chunk_kib} KiB")
    print(f"{'format':8} {'coding':8} {'wire MB':>8} {'ratio':>6} {'seconds':>8} {'MB/s':>7}")
    for fmt in ("json", "msgpack"):
        for coding in ("identity", *compression.available()):
            opts: dict[str, Any] = {"wire_format": fmt}
            if coding != "identity":
                opts["compression"] = [coding]
            wire, seconds = await transfer(data, chunk, **opts)
            print(
                f"{fmt:8} {coding:8} {wire / 1e6:8.1f} {wire / len(data):6.2f} "
                f"{seconds:8.2f} {len(data) / 1e6 / seconds:7.1f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
