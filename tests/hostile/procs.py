"""Real ``raftcache serve`` processes on loopback, for tests that kill, hang or restart nodes.

Each node logs JSON lines to its own file; ``stop_all`` kills whatever is still running, so a
test that fails half-way leaves no process behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.server.cluster import free_ports


def node_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a node: ours without RAFTCACHE_* variables, JSON logs, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTCACHE_")}
    env["RAFTCACHE_LOG_FORMAT"] = "json"
    env.update(extra or {})
    return env


@dataclass
class Node:
    node_id: str
    port: int
    data_dir: Path
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class Procs:
    """Nodes of one test; ``start`` spawns one, ``stop_all`` ends them all."""

    root: Path
    env: dict[str, str] = field(default_factory=node_env)
    nodes: dict[str, Node] = field(default_factory=dict)

    def add(self, node_id: str, port: int | None = None) -> Node:
        port = port or free_ports(1)[0]
        node = Node(node_id, port, self.root / node_id, self.root / f"{node_id}.log")
        self.nodes[node_id] = node
        return node

    def start(
        self, node: Node, peers: Sequence[Node], *extra: str, host: str = "127.0.0.1"
    ) -> None:
        """Spawn ``node`` listening on ``host`` (its URL stays on 127.0.0.1)."""
        peer_list = ",".join(f"{p.node_id}={p.url}" for p in peers)
        args = [
            sys.executable,
            "-m",
            "raftcache",
            "serve",
            "--id",
            node.node_id,
            "--listen",
            f"{host}:{node.port}",
            "--peers",
            peer_list,
            "--data-dir",
            str(node.data_dir),
            *extra,
        ]
        with node.log.open("ab") as out:
            node.popen = subprocess.Popen(
                args, stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=self.env
            )

    def kill(self, node: Node) -> None:
        """SIGKILL: a crash, or a machine lost for good."""
        if node.popen is not None and node.popen.poll() is None:
            node.popen.send_signal(signal.SIGKILL)
            node.popen.wait(timeout=30)

    def stop_all(self) -> None:
        for node in self.nodes.values():
            self.kill(node)


async def wait_exit(popen: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    async with asyncio.timeout(timeout):
        while popen.poll() is None:
            await asyncio.sleep(0.05)
    return popen.returncode


async def get_json(
    session: aiohttp.ClientSession, url: str, timeout: float = 5.0, **kwargs: object
) -> tuple[int, object]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout), **kwargs) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.json(content_type=None)


async def wait_status(
    session: aiohttp.ClientSession,
    node: Node,
    want: Mapping[str, object],
    timeout: float = 30.0,
    headers: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """Poll ``/v1/status`` until every field of ``want`` has its value; returns the status."""
    last: object = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    status, body = await get_json(
                        session, node.url + "/v1/status", headers=dict(headers or {})
                    )
                    last = body
                    if (
                        status == 200
                        and isinstance(body, dict)
                        and all(body.get(k) == v for k, v in want.items())
                    ):
                        return body
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{node.node_id} never reached {want}; last status {last}") from None
