"""Benchmark the RESP front-end: three real node processes (HTTP Raft, file storage, a RESP
port each), driven by redis-benchmark when installed, else by a redis-py pipeline load.

Run: ``.venv/bin/python -m tests.resp.bench_resp [--requests N] [--clients C]``. Not a test:
timing belongs here, not in assertions. Prints one line per workload with its ops/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from tests.server.cluster import free_ports


async def _serve_node(args: argparse.Namespace) -> None:
    """One node: the same composition as ``raftcache serve``, plus a RESP server."""
    from raftcache.process.config import ServeOptions
    from raftcache.process.serve import build_node_server
    from raftcache.resp import start_resp_server

    peers = dict(item.split("=", 1) for item in args.peers.split(","))
    options = ServeOptions(
        id=args.node, host="127.0.0.1", port=args.port, peers=peers, data_dir=Path(args.data)
    )
    server = build_node_server(options)
    await server.start()
    resp = await start_resp_server(
        server.service, server.node, "127.0.0.1", args.resp_port, clock=time.time
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await resp.stop()
    await server.stop()


def _start_cluster(data: Path) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    http_ports, resp_ports = free_ports(3), free_ports(3)
    peers = ",".join(f"n{i + 1}=http://127.0.0.1:{port}" for i, port in enumerate(http_ports))
    procs = []
    for i in range(3):
        argv = [sys.executable, "-m", "tests.resp.bench_resp", "--node", f"n{i + 1}"]
        argv += ["--port", str(http_ports[i]), "--resp-port", str(resp_ports[i])]
        argv += ["--peers", peers, "--data", str(data / f"n{i + 1}")]
        procs.append(subprocess.Popen(argv, stderr=subprocess.DEVNULL))
    return procs, resp_ports


def _roles(ports: list[int]) -> dict[str, int]:
    """Port of the leader and of a follower, once the cluster agrees on a leader."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        roles: dict[str, int] = {}
        with contextlib.suppress(redis.RedisError):
            for port in ports:
                info = redis.Redis(port=port, socket_timeout=2).info("raft")
                roles.setdefault(str(info["raft_role"]), port)
            if "leader" in roles and "follower" in roles:
                return roles
        time.sleep(0.2)
    raise RuntimeError("no leader elected")


def _redis_benchmark(port: int, requests: int, clients: int, pipeline: int) -> str:
    tool = shutil.which("redis-benchmark")
    assert tool is not None
    argv = [tool, "-p", str(port), "-t", "set,get,incr,mset", "-n", str(requests)]
    argv += ["-c", str(clients), "-P", str(pipeline), "-q"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600).stdout
    rates = re.findall(r"(\w+)(?: \(10 keys\))?: ([\d.]+) requests per second", out)
    return "  ".join(f"{name} {float(rate):>9,.0f}/s" for name, rate in rates)


def _redis_py(port: int, requests: int, pipeline: int) -> str:
    client = redis.Redis(port=port)
    results = []
    workloads: tuple[tuple[str, Callable[[Any, int], object]], ...] = (
        ("SET", lambda p, i: p.set(f"b:{i}", "x" * 100)),
        ("GET", lambda p, i: p.get(f"b:{i}")),
        ("INCR", lambda p, i: p.incr("b:counter")),
    )
    for name, add in workloads:
        start = time.perf_counter()
        for base in range(0, requests, pipeline):
            pipe = client.pipeline(transaction=False)
            for i in range(base, min(base + pipeline, requests)):
                add(pipe, i)
            pipe.execute()
        results.append(f"{name} {requests / (time.perf_counter() - start):>9,.0f}/s")
    client.close()
    return "  ".join(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--node")
    parser.add_argument("--port", type=int)
    parser.add_argument("--resp-port", type=int)
    parser.add_argument("--peers")
    parser.add_argument("--data")
    args = parser.parse_args()
    if args.node:
        asyncio.run(_serve_node(args))
        return
    with tempfile.TemporaryDirectory() as tmp:
        procs, ports = _start_cluster(Path(tmp))
        try:
            roles = _roles(ports)
            print(f"3 node processes, file storage, {os.cpu_count()} CPUs")
            for where in ("leader", "follower"):
                for pipeline in (1, 16):
                    label = f"{where:8} -c {args.clients:<3} -P {pipeline:<3}"
                    if shutil.which("redis-benchmark"):
                        line = _redis_benchmark(roles[where], args.requests, args.clients, pipeline)
                    else:
                        line = _redis_py(roles[where], args.requests, pipeline)
                    print(label, line, flush=True)
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    main()
