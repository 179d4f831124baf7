"""``raftcache cluster``: run a local N-node cluster in child processes until Ctrl-C.

Rule: stdout carries only the facts a script needs, one per line — ``n1 http://127.0.0.1:8001``
for each node as soon as it is spawned (followed by the ``redis://`` URLs of its Redis listeners
when ``--resp-base-port`` or ``--resp-cluster-base-port`` is given; with ``--groups`` G > 1,
``--resp-base-port R`` alone also opens the cluster-mode ports, from R + N on), then
``leader n2 http://127.0.0.1:8002`` once elected (with ``--groups`` G > 1: one line
``group g0 leader n2 http://127.0.0.1:8002`` per group once every group has one);
progress and diagnostics go to stderr. Whatever happens (Ctrl-C, SIGTERM, SIGHUP, a node failing
to start, an exception), every child is stopped before the command returns (``supervisor``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from raftcache.cli.common import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    TOKEN_ENV,
    fail,
    positive_float,
    positive_int,
)
from raftcache.cli.supervisor import NodeSpec, Supervisor, log_tail, plan_nodes
from raftcache.client import AsyncClient
from raftcache.client.errors import RaftcacheError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "cluster",
        help="run a local cluster until Ctrl-C",
        description="Start N nodes (n1..nN) as child processes on consecutive loopback ports, "
        "print their URLs and the leader, and stop them all on Ctrl-C or SIGTERM. Arguments "
        "after -- are passed to every `raftcache serve`.",
    )
    p.add_argument("--nodes", type=positive_int, default=3, help="number of nodes (default 3)")
    p.add_argument("--base-port", type=_port, default=8001, help="port of n1 (default 8001)")
    p.add_argument(
        "--resp-base-port",
        type=_port,
        default=None,
        help="serve the Redis protocol too, n1 on this port, n2 on the next... (default: off)",
    )
    p.add_argument(
        "--resp-cluster-base-port",
        type=_port,
        default=None,
        help="serve the Redis Cluster protocol (MOVED to the leader) from this port on "
        "(with --groups > 1 and --resp-base-port R: default R + --nodes)",
    )
    p.add_argument(
        "--groups",
        type=positive_int,
        default=1,
        metavar="G",
        help="split the keyspace over G Raft groups, each on --replicas of the nodes "
        "(default 1: every node holds every key)",
    )
    p.add_argument(
        "--replicas",
        type=positive_int,
        default=3,
        metavar="N",
        help="replicas of each group with --groups > 1 (default 3)",
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--data-dir", default="./data", help="parent of the nodes' data directories")
    p.add_argument(
        "--leader-timeout",
        type=positive_float,
        default=30.0,
        metavar="S",
        help="give up when no leader is elected within S seconds (default 30)",
    )
    p.add_argument(
        "--grace", type=positive_float, default=10.0, metavar="S", help="SIGTERM grace period"
    )
    p.add_argument("serve_args", nargs="*", metavar="-- SERVE_ARGS", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_cluster)


def cmd_cluster(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("raftcache.process.cli") is None:
        return fail("cluster", "the node server (raftcache serve) is not available", EXIT_USAGE)
    cluster_base = args.resp_cluster_base_port
    if cluster_base is None and args.groups > 1 and args.resp_base_port is not None:
        # Many groups are for Redis Cluster clients above all: they need a cluster-mode port
        # (MOVED to each group's leader), while the plain ports keep forwarding for the
        # others. Right after the plain ports, unless given.
        cluster_base = args.resp_base_port + args.nodes
    specs = plan_nodes(
        args.nodes,
        args.host,
        args.base_port,
        Path(args.data_dir),
        resp_base_port=args.resp_base_port,
        resp_cluster_base_port=cluster_base,
        # Stores of a local cluster stand for machines of their own (placement keeps a
        # group's replicas on distinct hosts); `-- --host-label X` still wins (given later).
        own_hosts=args.groups > 1,
    )
    bases = [args.base_port, args.resp_base_port, cluster_base]
    if any(b is not None and b + args.nodes - 1 > 65535 for b in bases):
        return fail("cluster", "ports beyond 65535: lower the base ports or --nodes", EXIT_USAGE)
    ports = [p for s in specs for p in (s.port, s.resp_port, s.resp_cluster_port) if p]
    if len(set(ports)) != len(ports):
        return fail("cluster", "the HTTP and RESP port ranges overlap", EXIT_USAGE)
    busy = [p for p in ports if port_in_use(args.host, p)]
    if busy:
        listed = ", ".join(map(str, busy))
        return fail("cluster", f"port {listed} already in use (another cluster?)", EXIT_USAGE)
    shape = ["--groups", str(args.groups), "--replicas", str(args.replicas)]
    supervisor = Supervisor(
        specs, extra_args=[*(shape if args.groups > 1 else []), *args.serve_args]
    )
    with stop_on_signals() as stop:
        try:
            supervisor.start()
            for spec in specs:
                resp = [
                    f"redis://{spec.host}:{p}"
                    for p in (spec.resp_port, spec.resp_cluster_port)
                    if p
                ]
                print(" ".join([spec.node_id, spec.url, *resp]), flush=True)
                pid = supervisor.procs[spec.node_id].pid
                _note(f"started {spec.node_id} (pid {pid}), log {spec.log_path}")
            if args.groups > 1:
                return _run_groups(specs, supervisor, stop, args.leader_timeout)
            return _run(specs, supervisor, stop, args.leader_timeout)
        finally:
            _note("stopping nodes...")
            codes = supervisor.stop(grace_s=args.grace)
            _note("stopped " + ", ".join(f"{n} (exit {c})" for n, c in codes.items()))


def _run(
    specs: list[NodeSpec], supervisor: Supervisor, stop: threading.Event, timeout_s: float
) -> int:
    """Wait for a leader, then watch the nodes until asked to stop."""
    leader = asyncio.run(wait_for_leader(specs, supervisor, stop, timeout_s))
    if stop.is_set():
        return EXIT_OK
    if leader is None:
        return EXIT_UNAVAILABLE
    print(f"leader {leader.node_id} {leader.url}", flush=True)
    endpoints = ",".join(s.url for s in specs)
    _note(f"cluster ready (export RAFTCACHE_ENDPOINTS={endpoints}); Ctrl-C stops every node")
    while not stop.wait(0.5):
        for node_id, code in supervisor.newly_exited():
            _note(f"warning: node {node_id} exited with code {code}; the others keep running")
    return EXIT_OK


def _run_groups(
    specs: list[NodeSpec], supervisor: Supervisor, stop: threading.Event, timeout_s: float
) -> int:
    """As ``_run``, for stores of many groups: wait until every group has a leader, print
    ``group g0 leader n2 http://…`` for each, then watch the stores."""
    leaders = asyncio.run(wait_for_group_leaders(specs, supervisor, stop, timeout_s))
    if stop.is_set():
        return EXIT_OK
    if leaders is None:
        return EXIT_UNAVAILABLE
    by_id = {s.node_id: s for s in specs}
    for group, leader in leaders.items():
        print(f"group {group} leader {leader} {by_id[leader].url}", flush=True)
    endpoints = ",".join(s.url for s in specs)
    _note(f"cluster ready (export RAFTCACHE_ENDPOINTS={endpoints}); Ctrl-C stops every store")
    while not stop.wait(0.5):
        for node_id, code in supervisor.newly_exited():
            _note(f"warning: store {node_id} exited with code {code}; the others keep running")
    return EXIT_OK


async def wait_for_group_leaders(
    specs: list[NodeSpec], supervisor: Supervisor, stop: threading.Event, timeout_s: float
) -> dict[str, str] | None:
    """Poll the stores' /v1/status until each group of the cluster has a leader (as its own
    replicas report it); group id → leader store id, or None on timeout, stop or a dead store."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    token = os.environ.get(TOKEN_ENV)
    known = {s.node_id for s in specs}
    async with AsyncClient([s.url for s in specs], client_token=token) as client:
        while not stop.is_set():
            exited = supervisor.newly_exited()
            if exited:
                for node_id, code in exited:
                    spec = next(s for s in specs if s.node_id == node_id)
                    _note(f"error: store {node_id} exited with code {code} during start-up")
                    print(log_tail(spec.log_path), file=sys.stderr)
                return None
            leaders: dict[str, str] = {}
            groups: set[str] = set()
            for _, status in await client.poll("/v1/status", timeout_s=0.5):
                if isinstance(status, RaftcacheError):
                    continue
                for group in status.get("groups") or ():
                    groups.add(str(group.get("group")))
                    if group.get("hosted") and group.get("leader") in known:
                        leaders[str(group["group"])] = str(group["leader"])
            if groups and groups <= leaders.keys():
                return dict(sorted(leaders.items(), key=lambda kv: int(kv[0].lstrip("g"))))
            if loop.time() >= deadline:
                missing = ", ".join(sorted(groups - leaders.keys())) or "every group"
                _note(f"error: no leader elected within {timeout_s:g} s for {missing}")
                return None
            await asyncio.sleep(0.2)
    return None


async def wait_for_leader(
    specs: list[NodeSpec], supervisor: Supervisor, stop: threading.Event, timeout_s: float
) -> NodeSpec | None:
    """Poll every node's /v1/status until one leads; None on timeout, stop, or a dead node."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    token = os.environ.get(TOKEN_ENV)
    by_url = {s.url: s for s in specs}
    async with AsyncClient([s.url for s in specs], client_token=token) as client:
        while not stop.is_set():
            exited = supervisor.newly_exited()
            if exited:
                for node_id, code in exited:
                    spec = next(s for s in specs if s.node_id == node_id)
                    _note(f"error: node {node_id} exited with code {code} during start-up")
                    print(log_tail(spec.log_path), file=sys.stderr)
                return None
            results = await client.poll("/v1/status", timeout_s=0.5)
            for url, status in results:
                if not isinstance(status, RaftcacheError) and status.get("role") == "leader":
                    return by_url[url]
            if loop.time() >= deadline:
                _note(f"error: no leader elected within {timeout_s:g} s")
                return None
            await asyncio.sleep(0.2)
    return None


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Turn SIGINT/SIGTERM/SIGHUP into an Event for the duration of the block."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text}")
    return value


def _note(message: str) -> None:
    print(f"raftcache cluster: {message}", file=sys.stderr, flush=True)
