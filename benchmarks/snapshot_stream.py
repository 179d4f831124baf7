"""Benchmark: a large snapshot streamed from a leader to an empty follower, two processes, HTTP.

Not part of ``make test`` (it measures, it asserts only that the bytes arrived intact). Run::

    .venv/bin/python -m benchmarks.snapshot_stream [--mb 100] [--chunk-kib 1024]
        [--wire msgpack|json] [--no-fsync] [--no-tracemalloc]

The leader process writes a snapshot of ``--mb`` MiB of pseudo-random bytes into its
FileStorage (streamed, 1 MiB at a time), starts a RaftNode over HttpNetwork and, once elected,
must send the whole snapshot to the follower (whose log is empty) in InstallSnapshot chunks.
The follower writes the chunks to its own FileStorage as they arrive, installs and restores.
Each process reports the transfer's wall time, its tracemalloc peak during the transfer (every
Python allocation above the level when the transfer began) and its peak RSS (``ru_maxrss``,
the process's high-water mark). The state machine keeps only a digest of what it restored, so
the figures show what the transfer itself costs.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

from raftcache.network import HttpNetwork
from raftcache.raft.config import RaftConfig
from raftcache.raft.configuration import Configuration
from raftcache.raft.core import Role
from raftcache.raft.node import RaftNode
from raftcache.storage.base import SnapshotMeta
from raftcache.storage.file import FileStorage

INDEX = 10
MIB = 1024 * 1024
IDS = ["n1", "n2"]


class DigestMachine:
    """Keeps only the digest of the snapshot it restored (streamed)."""

    def __init__(self) -> None:
        self.digest = ""
        self.size = 0

    def apply(self, command: bytes) -> Any:
        return None

    def snapshot(self) -> bytes:
        return self.digest.encode()

    def restore(self, data: bytes) -> None:
        self.digest, self.size = hashlib.sha256(data).hexdigest(), len(data)

    def restore_stream(self, stream: Any) -> None:
        h, size = hashlib.sha256(), 0
        while piece := stream.read(256 * 1024):
            h.update(piece)
            size += len(piece)
        self.digest, self.size = h.hexdigest(), size


async def _until(condition: Any, interval: float = 0.002) -> None:
    """Poll node state (the node offers no event for these milestones)."""
    while not condition():  # noqa: ASYNC110 - polling node state is the point here
        await asyncio.sleep(interval)


def _piece(number: int) -> bytes:
    return hashlib.shake_256(f"snapshot:{number}".encode()).digest(MIB)


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Meter:
    """tracemalloc peak above the starting level (optional: it slows allocation-heavy code)."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self.base = 0

    def start(self) -> None:
        if self.on:
            tracemalloc.start()
            self.base = tracemalloc.get_traced_memory()[0]

    def peak_mib(self) -> float | None:
        if not self.on:
            return None
        return (tracemalloc.get_traced_memory()[1] - self.base) / MIB


def _node(args: argparse.Namespace, me: str, storage: FileStorage, sm: DigestMachine) -> RaftNode:
    ports = {"n1": args.leader_port, "n2": args.follower_port}
    other = next(i for i in IDS if i != me)
    net = HttpNetwork(
        me,
        port=ports[me],
        node_addresses={other: f"http://127.0.0.1:{ports[other]}"},
        wire_format=args.wire,
        timeout=30.0,
    )
    config = RaftConfig(
        snapshot_threshold=0,
        snapshot_chunk_size=args.chunk_kib * 1024,
        rpc_timeout=30.0,
        # The follower must not campaign against the leader while it installs.
        election_timeout_min=1.0 if me == "n1" else 30.0,
        election_timeout_max=2.0 if me == "n1" else 60.0,
    )
    return RaftNode(me, IDS, net, storage, sm, config, rng=random.Random(7))


async def _leader(args: argparse.Namespace) -> dict[str, Any]:
    storage = FileStorage(os.path.join(args.dir, "n1"), fsync=args.fsync)
    storage.bind("n1")
    storage.load()
    t = time.perf_counter()
    with storage.snapshot_writer(SnapshotMeta(INDEX, 1, Configuration.of(IDS))) as writer:
        for i in range(args.mb):
            writer.write(_piece(i))
        writer.commit()
    storage.set_hard_state(1, None)
    storage.sync()
    seeded = time.perf_counter() - t
    sm = DigestMachine()
    node = _node(args, "n1", storage, sm)
    await node.start()
    meter = Meter(args.tracemalloc)
    rss_before = _maxrss_mib()
    meter.start()  # the election takes at least a second from here: nothing is sent yet
    try:
        async with asyncio.timeout(args.timeout):
            await _until(lambda: node.role is Role.LEADER)
            started = time.perf_counter()
            await _until(lambda: node.core.progress["n2"].match_index >= INDEX)
        elapsed = time.perf_counter() - started
        return {
            "side": "leader",
            "seconds": elapsed,
            "seed_seconds": seeded,
            "tracemalloc_peak_mib": meter.peak_mib(),
            "maxrss_before_mib": rss_before,
            "maxrss_mib": _maxrss_mib(),
            "digest": sm.digest,
            "size": sm.size,
        }
    finally:
        await node.stop()


async def _follower(args: argparse.Namespace) -> dict[str, Any]:
    storage = FileStorage(os.path.join(args.dir, "n2"), fsync=args.fsync)
    sm = DigestMachine()
    node = _node(args, "n2", storage, sm)
    await node.start()
    meter = Meter(args.tracemalloc)
    rss_before = _maxrss_mib()
    meter.start()
    try:
        async with asyncio.timeout(args.timeout):
            await _until(lambda: node.stats.rpcs_received["InstallSnapshot"] > 0)
            started = time.perf_counter()
            await _until(lambda: node.last_applied >= INDEX)
        elapsed = time.perf_counter() - started
        chunks = node.stats.rpcs_received["InstallSnapshot"]
        peak = meter.peak_mib()
        await asyncio.sleep(1.5)  # let the last answer reach the leader before stopping
        return {
            "side": "follower",
            "seconds": elapsed,
            "chunks": chunks,
            "tracemalloc_peak_mib": peak,
            "maxrss_before_mib": rss_before,
            "maxrss_mib": _maxrss_mib(),
            "digest": sm.digest,
            "size": sm.size,
        }
    finally:
        await node.stop()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_role(args: argparse.Namespace) -> None:
    coro = _leader(args) if args.role == "leader" else _follower(args)
    print(json.dumps(asyncio.run(coro)), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=int, default=100, help="snapshot size in MiB")
    p.add_argument("--chunk-kib", type=int, default=1024, help="InstallSnapshot chunk size")
    p.add_argument("--wire", choices=["msgpack", "json"], default="msgpack")
    p.add_argument("--no-fsync", dest="fsync", action="store_false")
    p.add_argument("--no-tracemalloc", dest="tracemalloc", action="store_false")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--role", choices=["leader", "follower"], help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    p.add_argument("--leader-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--follower-port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role:
        _run_role(args)
        return
    with tempfile.TemporaryDirectory(prefix="snapstream-") as tmp:
        common = [
            *("--mb", str(args.mb), "--chunk-kib", str(args.chunk_kib), "--wire", args.wire),
            *("--timeout", str(args.timeout), "--dir", tmp),
            *("--leader-port", str(_free_port()), "--follower-port", str(_free_port())),
            *([] if args.fsync else ["--no-fsync"]),
            *([] if args.tracemalloc else ["--no-tracemalloc"]),
        ]
        cmd = [sys.executable, "-m", "benchmarks.snapshot_stream", *common]
        procs = {
            role: subprocess.Popen([*cmd, "--role", role], stdout=subprocess.PIPE, text=True)
            for role in ("follower", "leader")
        }
        results = {}
        for role, proc in procs.items():
            out, _ = proc.communicate(timeout=args.timeout + 60)
            if proc.returncode != 0:
                raise SystemExit(f"{role} failed (exit {proc.returncode})")
            results[role] = json.loads(out.strip().splitlines()[-1])
    leader, follower = results["leader"], results["follower"]
    intact = (follower["digest"], follower["size"]) == (leader["digest"], leader["size"])
    size_mib = leader["size"] / MIB
    print(
        f"snapshot {size_mib:.0f} MiB, chunks of {args.chunk_kib} KiB "
        f"({follower['chunks']} InstallSnapshot requests), wire {args.wire}, "
        f"fsync {'on' if args.fsync else 'off'}, bytes intact: {intact}"
    )
    for r in (leader, follower):
        peak = r["tracemalloc_peak_mib"]
        print(
            f"  {r['side']:8}  {r['seconds']:6.2f} s  {size_mib / r['seconds']:7.1f} MiB/s  "
            f"tracemalloc peak {'-' if peak is None else f'{peak:6.2f} MiB'}  "
            f"peak RSS {r['maxrss_mib']:6.1f} MiB "
            f"(before the transfer {r['maxrss_before_mib']:.1f})"
        )
    print(f"  (leader wrote its snapshot in {leader['seed_seconds']:.2f} s before starting)")
    if not intact:
        raise SystemExit("the follower's snapshot differs from the leader's")


if __name__ == "__main__":
    main()
