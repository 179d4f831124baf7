"""Benchmark: RPCs per second over HttpNetwork (JSON and msgpack bodies) and StreamNetwork.

Not collected by pytest (a benchmark measures, it asserts nothing). Run it with::

    .venv/bin/python -m tests.network.bench_transport [--seconds 3] [--concurrency 16]

Two nodes on loopback (``--transports``: ``http-json``, ``http-msgpack``, ``stream``; the stream
carries msgpack frames); ``concurrency`` tasks send back to back for ``seconds`` each of three
shapes of AppendEntries: a heartbeat (no entries), a batch of 64 entries of 128 bytes, and a
1 MiB InstallSnapshot chunk. The codec alone (encode + decode, no sockets) is timed too, which
bounds what any transport can gain from a faster format.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from raftcache.network import HttpNetwork
from raftcache.network.httpwire import decode_body, encode_body
from raftcache.network.stream import StreamNetwork
from raftcache.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    LogEntry,
    RequestVoteResponse,
)

RNG = random.Random(1)
SHAPES: dict[str, Any] = {
    "heartbeat": AppendEntriesRequest(5, "a", 100, 5, [], 99),
    "64x128B": AppendEntriesRequest(
        5, "a", 100, 5, [LogEntry(5, 101 + i, RNG.randbytes(128)) for i in range(64)], 99
    ),
    "1MiB chunk": InstallSnapshotRequest(5, "a", 10**5, 5, 0, RNG.randbytes(1 << 20), False),
}


class Echo:
    """Handlers that answer at once."""

    async def handle_append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        last = req.prev_log_index + len(req.entries)
        return AppendEntriesResponse(req.term, True, last, 0, 0, last)

    async def handle_install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
        return InstallSnapshotResponse(req.term, True, req.offset + len(req.data))

    async def handle_request_vote(self, req: Any) -> RequestVoteResponse:
        return RequestVoteResponse(req.term, True)


def sender_of(net: HttpNetwork, msg: Any) -> Callable[[], Any]:
    if isinstance(msg, InstallSnapshotRequest):
        return lambda: net.send_install_snapshot("b", msg)
    return lambda: net.send_append_entries("b", msg)


TRANSPORTS: dict[str, tuple[type[HttpNetwork], str]] = {
    "http-json": (HttpNetwork, "json"),
    "http-msgpack": (HttpNetwork, "msgpack"),
    "stream": (StreamNetwork, "msgpack"),
}


async def rate(transport: str, msg: Any, seconds: float, concurrency: int) -> float:
    """RPCs per second that ``concurrency`` back-to-back senders achieve."""
    cls, fmt = TRANSPORTS[transport]
    b = cls("b", port=0, node_addresses={})
    b.register_handlers(Echo())
    await b.start()
    a = cls("a", port=0, node_addresses={"b": f"http://127.0.0.1:{b.port}"}, wire_format=fmt)
    a.register_handlers(Echo())
    await a.start()
    send = sender_of(a, msg)
    try:
        await send()  # learn what b reads
        done = 0
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await send()
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done / (time.perf_counter() - started)
    finally:
        await a.stop()
        await b.stop()


def codec_rate(fmt: str, msg: Any, seconds: float = 0.5) -> float:
    """Encode + decode round trips per second, no sockets."""
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        decode_body(fmt, type(msg), encode_body(fmt, msg))
        n += 1
    return n / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--transports", default=",".join(TRANSPORTS))
    args = parser.parse_args()
    print(f"{'shape':12} {'transport':13} {'RPC/s':>9} {'codec/s':>10}")
    for shape, msg in SHAPES.items():
        for transport in args.transports.split(","):
            rps = await rate(transport, msg, args.seconds, args.concurrency)
            fmt = TRANSPORTS[transport][1]
            print(f"{shape:12} {transport:13} {rps:9.0f} {codec_rate(fmt, msg):10.0f}")


if __name__ == "__main__":
    asyncio.run(main())
