"""One raftcache node for the in-process comparison with PySyncObj (its own Python API).

Rule: the node is built the way an embedding program would build it — ``RaftNode`` with the
``CacheStateMachine`` over ``HttpNetwork`` (listening on its own port; ``StreamNetwork`` with
``--transport stream``) and ``FileStorage`` (fsync on unless ``--no-fsync``) — and the driver
node proposes ``encode_set`` commands of 100-byte values straight into ``RaftNode.propose``; no
HTTP client API is involved. Once started, each node applies ``raftcache.process.gcpolicy.tune`` (as
``raftcache serve`` does; ``--gc default`` to compare). Every node
runs the default ``RaftConfig``; the driver is started a second before the others, so it
(almost always) wins the first election. Control protocol: ``benchmarks.suite.inproc_protocol``.

Run: ``python -m benchmarks.raftcache_inproc --id n1 --peers n1=URL,... --data-dir D [--driver]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
import time
from typing import Any

from benchmarks.suite.inproc_protocol import Tally
from raftcache.cache.commands import encode_set
from raftcache.cache.machine import CacheStateMachine
from raftcache.network.http import HttpNetwork
from raftcache.network.stream import StreamNetwork
from raftcache.process import gcpolicy
from raftcache.raft import FileStorage, RaftNode, Role
from raftcache.raft.config import RaftConfig

KEYS = 10_000


class Driver:
    """Proposes sets of 100-byte values on the leader and counts what commits in time."""

    def __init__(self, node: RaftNode, value_size: int) -> None:
        self.node = node
        self.value = b"v" * value_size
        self.counter = 0

    async def propose_one(self, timeout_s: float) -> None:
        self.counter += 1
        key = f"k{self.counter % KEYS:07d}"
        await self.node.propose(encode_set(key, self.value, now=time.time()), timeout=timeout_s)

    async def wait_leader(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        # Polling: RaftNode offers no role-change event to wait on.
        while time.monotonic() < deadline and self.node.role is not Role.LEADER:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return {"leader": self.node.role is Role.LEADER}

    async def latency(self, duration_s: float, timeout_s: float = 5.0) -> dict[str, Any]:
        tally = Tally()
        started = time.perf_counter()
        while time.perf_counter() - started < duration_s:
            tally.sent += 1
            t0 = time.perf_counter()
            error = ""
            try:
                await self.propose_one(timeout_s)
            except Exception as exc:
                error = type(exc).__name__
            tally.record(time.perf_counter() - t0, not error, timeout_s, error)
        return tally.result(0.0, time.perf_counter() - started)

    async def rate(self, rate: float, duration_s: float, timeout_s: float) -> dict[str, Any]:
        tally = Tally()
        tasks: set[asyncio.Task[None]] = set()

        async def one() -> None:
            t0 = time.perf_counter()
            error = ""
            try:
                await self.propose_one(timeout_s)
            except Exception as exc:
                error = type(exc).__name__
            tally.record(time.perf_counter() - t0, not error, timeout_s, error)

        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < duration_s:
            for _ in range(int(rate * elapsed) - tally.sent):
                task = asyncio.create_task(one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                tally.sent += 1
            await asyncio.sleep(0.002)
        if tasks:
            await asyncio.wait(set(tasks), timeout=timeout_s + 2)
        return tally.result(rate, duration_s)


async def _commands(driver: Driver) -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "quit":
            return
        if op == "wait_leader":
            answer = await driver.wait_leader(float(cmd["timeout"]))
        elif op == "stats":
            # RPCs the driver sent so far (the A/B script divides by the proposals made).
            stats = driver.node.stats
            answer = {
                "rpcs_sent": dict(stats.rpcs_sent),
                "rpcs_failed": dict(stats.rpcs_failed),
                "proposed": driver.counter,
                "term": driver.node.current_term,
            }
        elif op == "latency":
            answer = await driver.latency(float(cmd["duration"]))
        elif op == "rate":
            answer = await driver.rate(
                float(cmd["rate"]), float(cmd["duration"]), float(cmd["timeout"])
            )
        else:
            answer = {"error": f"unknown op {op!r}"}
        answer["role"] = driver.node.role.value
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


async def run(args: argparse.Namespace) -> None:
    peers = dict(item.split("=", 1) for item in args.peers.split(","))
    port = int(peers[args.id].rsplit(":", 1)[1])
    kind = StreamNetwork if args.transport == "stream" else HttpNetwork
    network = kind(
        args.id,
        port=port,
        node_addresses={k: v for k, v in peers.items() if k != args.id},
        wire_format=args.wire,
    )
    # Default timings on every node: a shorter election timeout for the driver would also
    # shorten its check-quorum window and make it step down on a slow round. The orchestrator
    # starts the driver first instead, so that its election timer runs out first.
    config = RaftConfig()
    for item in args.set:  # A/B of a knob: --set persist_in_thread=false
        name, _, raw = item.partition("=")
        kind = type(getattr(config, name))
        setattr(config, name, raw.lower() in ("1", "true", "yes") if kind is bool else kind(raw))
    node = RaftNode(
        args.id,
        list(peers),
        network,
        FileStorage(args.data_dir, fsync=not args.no_fsync),
        CacheStateMachine(),
        config,
        rng=random.Random(),
        peer_addresses=peers,
    )
    await node.start()
    # What a user embedding RaftNode in a server process is advised to do (README): the
    # collector policy of ``raftcache serve``.
    gcpolicy.tune(args.gc)
    try:
        if args.driver:
            await _commands(Driver(node, args.value_size))
        else:
            stop = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                asyncio.get_running_loop().add_signal_handler(sig, stop.set)
            await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--id", required=True)
    parser.add_argument("--peers", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--driver", action="store_true")
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--wire", choices=("json", "msgpack"), default="json")
    parser.add_argument("--transport", choices=("http", "stream"), default="http")
    parser.add_argument("--gc", choices=gcpolicy.POLICIES, default="tuned")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
