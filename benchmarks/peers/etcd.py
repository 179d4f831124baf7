"""An etcd cluster (Debian ``etcd-server``) started by hand on loopback ports, fsync on.

Rule: etcd runs with its defaults except what a loopback cluster needs (names, URLs, an initial
cluster, quiet logs); its WAL fsyncs every batch as it does by default (no
``--unsafe-no-fsync``). The v3 JSON gateway's prefix differs across versions (``/v3``,
``/v3beta``, ``/v3alpha``), so it is detected by asking each until one answers.
"""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path

from benchmarks.suite import httpc
from benchmarks.suite.procs import ProcessGroup, free_port, wait_port
from benchmarks.suite.raftcache_cluster import key_name
from benchmarks.suite.workloads import Shape
from benchmarks.suite.wrk import WrkJob

PREFIXES = ("/v3", "/v3beta", "/v3alpha")
_MODES = {
    "write": ("put", "0"),
    "read-linearizable": ("get", "0"),
    "read-stale": ("get", "1"),
    "mix-90/10": ("mix", "0"),
}


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


class EtcdCluster:
    """N etcd members; ``start()`` returns once the gateway answers and a leader is known."""

    def __init__(self, group: ProcessGroup, workdir: Path, nodes: int = 3) -> None:
        self.group = group
        self.workdir = workdir
        self.label = f"etcd-{nodes}"
        self.names = [f"e{i + 1}" for i in range(nodes)]
        self.client_ports = {n: free_port() for n in self.names}
        self.peer_ports = {n: free_port() for n in self.names}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.prefix = ""
        self.leader = ""

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.client_ports[name]}"

    def _argv(self, name: str) -> list[str]:
        client = self.url(name)
        peer = f"http://127.0.0.1:{self.peer_ports[name]}"
        initial = ",".join(f"{n}=http://127.0.0.1:{self.peer_ports[n]}" for n in self.names)
        return [
            "etcd",
            "--name",
            name,
            "--data-dir",
            str(self.workdir / f"{self.label}-{name}"),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            initial,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            f"bench-{self.label}",
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ]

    def start(self, timeout_s: float = 60.0) -> None:
        for name in self.names:
            log = self.workdir / f"{self.label}-{name}.log"
            self.procs[name] = self.group.start(self._argv(name), log_path=log)
        for name in self.names:
            wait_port(self.client_ports[name], timeout_s, self.procs[name])
        self.prefix = self.detect_prefix(self.names[0], timeout_s)
        self.wait_leader(timeout_s)

    def detect_prefix(self, name: str, timeout_s: float) -> str:
        """The first gateway prefix whose ``kv/range`` answers 200."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for prefix in PREFIXES:
                try:
                    status, _ = httpc.request(
                        "POST", f"{self.url(name)}{prefix}/kv/range", b'{"key":"AA=="}'
                    )
                except OSError:
                    continue
                if status == 200:
                    return prefix
            time.sleep(0.3)
        raise RuntimeError(f"no etcd v3 JSON gateway under {PREFIXES}")

    def wait_leader(self, timeout_s: float) -> str:
        """The member whose ``maintenance/status`` says it is the leader."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name in self.names:
                try:
                    st = httpc.json_call(
                        "POST", f"{self.url(name)}{self.prefix}/maintenance/status", {}
                    )
                except (OSError, RuntimeError):
                    continue
                if st.get("leader") and st["header"]["member_id"] == st["leader"]:
                    self.leader = name
                    return name
            time.sleep(0.3)
        raise TimeoutError(f"{self.label}: no leader after {timeout_s} s")

    def pids(self) -> dict[str, int]:
        followers = [n for n in self.names if n != self.leader]
        out = {"leader": self.procs[self.leader].pid}
        out.update({f"follower{i + 1}": self.procs[n].pid for i, n in enumerate(followers)})
        return out

    def prefill(self, shape: Shape, per_txn: int = 100) -> None:
        """Every key once, ``per_txn`` puts per transaction (etcd allows 128 by default)."""
        value = b64(b"v" * shape.value_size)
        url = f"{self.url(self.leader)}{self.prefix}/kv/txn"
        for start in range(0, shape.keys, per_txn):
            puts = [
                {"request_put": {"key": b64(key_name(i)), "value": value}}
                for i in range(start, min(start + per_txn, shape.keys))
            ]
            httpc.json_call("POST", url, {"success": puts})

    def job(self, workload: str, connections: int, shape: Shape) -> WrkJob:
        mode, serializable = _MODES[workload]
        args = (
            mode,
            str(shape.keys),
            str(shape.value_size),
            serializable,
            str(shape.read_ratio),
            self.prefix,
        )
        return WrkJob(self.url(self.leader), "etcd.lua", args, connections)
