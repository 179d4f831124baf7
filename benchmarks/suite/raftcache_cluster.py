"""A raftcache cluster of real ``raftcache serve`` processes on loopback, durable and fsync'd.

Rule: nodes are started exactly as an operator would (``python -m raftcache serve`` with
``--data-dir`` in a temporary directory; FileStorage fsyncs by default), on ports the kernel
chose free; the leader is whatever node the cluster elected, found through ``/v1/status``.
"""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.suite import httpc
from benchmarks.suite.procs import ProcessGroup, free_port, wait_port
from benchmarks.suite.workloads import Shape
from benchmarks.suite.wrk import WrkJob

_CONSISTENCY = {
    "write": ("put", "linearizable"),
    "read-linearizable": ("get", "linearizable"),
    "read-stale": ("get", "stale"),
    "mix-90/10": ("mix", "linearizable"),
}


def key_name(i: int) -> str:
    """Key ``i`` of the key space; the Lua scripts use the same spelling."""
    return f"k{i:07d}"


class RaftcacheCluster:
    """N ``raftcache serve`` processes; ``start()`` returns once a leader is elected."""

    def __init__(
        self,
        group: ProcessGroup,
        python: str,
        workdir: Path,
        nodes: int = 3,
        tag: str = "rc",
        series: str = "",
        extra_args: Sequence[str] = (),
    ) -> None:
        self.group = group
        self.python = python
        self.workdir = workdir
        # An extra series (another Raft wire) is labelled raftcache-N-<series>.
        self.label = f"raftcache-{nodes}" + (f"-{series}" if series else "")
        self.extra_args = list(extra_args)
        self.ids = [f"n{i + 1}" for i in range(nodes)]
        self.ports = {nid: free_port() for nid in self.ids}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.leader = ""
        self.tag = tag

    def url(self, nid: str) -> str:
        return f"http://127.0.0.1:{self.ports[nid]}"

    def _argv(self, nid: str) -> list[str]:
        peers = ",".join(f"{n}={self.url(n)}" for n in self.ids)
        return [
            self.python,
            "-m",
            "raftcache",
            "serve",
            "--id",
            nid,
            "--listen",
            f"127.0.0.1:{self.ports[nid]}",
            "--peers",
            peers,
            "--data-dir",
            str(self.workdir / f"{self.tag}-{nid}"),
            "--log-level",
            "warning",
            *self.extra_args,
        ]

    def start_node(self, nid: str) -> subprocess.Popen[bytes]:
        proc = self.group.start(self._argv(nid), log_path=self.workdir / f"{self.tag}-{nid}.log")
        self.procs[nid] = proc
        return proc

    def start(self, timeout_s: float = 60.0) -> None:
        for nid in self.ids:
            self.start_node(nid)
        for nid in self.ids:
            wait_port(self.ports[nid], timeout_s, self.procs[nid])
        self.wait_leader(timeout_s)

    def status(self, nid: str) -> dict[str, object]:
        result: dict[str, object] = httpc.json_call("GET", f"{self.url(nid)}/v1/status")
        return result

    def wait_leader(self, timeout_s: float) -> str:
        """Wait until every live node names the same leader and that node says it leads."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                leaders = {self.status(n).get("leader") for n in self.procs}
            except (OSError, RuntimeError):
                leaders = set()
            if len(leaders) == 1:
                leader = leaders.pop()
                if isinstance(leader, str) and self.status(leader).get("role") == "leader":
                    self.leader = leader
                    return leader
            time.sleep(0.2)
        raise TimeoutError(f"{self.label}: no agreed leader after {timeout_s} s")

    def pids(self) -> dict[str, int]:
        followers = [n for n in self.ids if n != self.leader]
        out = {"leader": self.procs[self.leader].pid}
        out.update({f"follower{i + 1}": self.procs[n].pid for i, n in enumerate(followers)})
        return out

    def load_keys(self, count: int, value_size: int, batch: int = 1000, workers: int = 4) -> None:
        """Write keys 0..count-1 through ``POST /v1/batch`` on the leader, ``batch`` per entry."""
        value = base64.b64encode(b"v" * value_size).decode()
        url = f"{self.url(self.leader)}/v1/batch"

        def one(start: int) -> None:
            ops = [
                {"op": "set", "key": key_name(i), "value": value}
                for i in range(start, min(start + batch, count))
            ]
            httpc.json_call("POST", url, {"ops": ops}, timeout_s=60.0)

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(0, count, batch)))

    def prefill(self, shape: Shape) -> None:
        self.load_keys(shape.keys, shape.value_size)

    def job(self, workload: str, connections: int, shape: Shape) -> WrkJob:
        mode, consistency = _CONSISTENCY[workload]
        args = (mode, str(shape.keys), str(shape.value_size), consistency, str(shape.read_ratio))
        return WrkJob(self.url(self.leader), "raftcache.lua", args, connections)
