"""Real ``python -m raftcache serve`` processes on loopback, for the end-to-end tests.

Rule: every process a test starts is stopped when the test ends, failure or not —
``ProcessCluster`` is a context manager whose exit SIGKILLs and reaps whatever is still running.
Waiting is polling against generous deadlines (a loaded 2-core box runs the suite), never a fixed
sleep whose length is asserted; a node that dies while we wait fails the wait with its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp

from raftcache.cli.supervisor import parent_death_hook
from tests.server.cluster import free_ports

__all__ = [
    "FAST_ELECTIONS",
    "WAIT_S",
    "NodeProcess",
    "ProcessCluster",
    "eventually_equal",
    "get_key",
    "key_url",
    "mget",
    "node_stats",
    "node_status",
    "wait_applied",
    "wait_for",
    "wait_for_leader",
]

#: Deadline of every wait: elections take 1-2 s by default, a busy box may stretch that a lot.
WAIT_S = 60.0

#: ``serve`` flags for a test whose elections are set-up, not its subject: a leader in well
#: under a second after a start or a kill instead of 1-2 s (the in-process clusters' timings).
#: Not for tests of lease or shutdown timing, nor for one that needs the leader it found to
#: stay leader: on a loaded box a stall of 0.3 s may cost a leader its term.
FAST_ELECTIONS = ["--election-timeout-min", "0.3", "--election-timeout-max", "0.6"]

T = TypeVar("T")


@dataclass
class NodeProcess:
    """One node: its id, port, files, and the process currently running it (if any)."""

    node_id: str
    port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    #: Exit codes of this node's previous processes, in order.
    exit_codes: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.node_id} is not running"
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            data = self.log_path.read_bytes()[-16384:]
        except OSError:
            return ""
        text = "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
        return f"--- {self.node_id} log ({self.log_path}) ---\n{text}"


def node_env() -> dict[str, str]:
    """The environment of a node: ours without any ``RAFTCACHE_*`` a developer may have set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTCACHE_")}
    # Logs must be readable while the node runs (failure messages quote them).
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ProcessCluster:
    """Nodes n1..nN of one cluster, each a ``raftcache serve`` child with a data dir under
    ``root``; started, killed and restarted on the same ports and directories by the tests."""

    def __init__(self, root: Path, size: int = 3, extra_args: Sequence[str] = ()) -> None:
        self.root = root
        self.extra_args = list(extra_args)
        #: Flags of one node only (its own ports, say), after ``extra_args``.
        self.node_args: dict[str, list[str]] = {}
        #: Stores that joined a running cluster: the URL each was started with ``--join``.
        self.joined: dict[str, str] = {}
        ports = free_ports(size)
        self.nodes: dict[str, NodeProcess] = {}
        for i, port in enumerate(ports, start=1):
            node_id = f"n{i}"
            self.nodes[node_id] = NodeProcess(
                node_id, port, root / node_id, root / f"{node_id}.log"
            )

    def give_resp_ports(self) -> dict[str, int]:
        """Give every node a Redis port (``--resp-port``) of its own; node id → port."""
        ports = dict(zip(self.nodes, free_ports(len(self.nodes)), strict=True))
        for node_id, port in ports.items():
            self.node_args[node_id] = ["--resp-port", str(port)]
        return ports

    @property
    def peers(self) -> str:
        """The ``--peers`` value naming every bootstrap node (not the stores that joined)."""
        return ",".join(
            f"{n.node_id}={n.url}" for n in self.nodes.values() if n.node_id not in self.joined
        )

    def add_joiner(self, node_id: str, join_url: str) -> NodeProcess:
        """A new store, started (by ``start``) with ``--join join_url`` instead of ``--peers``."""
        (port,) = free_ports(1)
        node = NodeProcess(node_id, port, self.root / node_id, self.root / f"{node_id}.log")
        self.nodes[node_id] = node
        self.joined[node_id] = join_url
        return node

    @property
    def endpoints(self) -> list[str]:
        return [n.url for n in self.nodes.values()]

    def live(self) -> list[NodeProcess]:
        return [n for n in self.nodes.values() if n.running()]

    def crashed(self) -> list[str]:
        """Nodes whose process ended without a test stopping it."""
        return [n.node_id for n in self.nodes.values() if n.proc and n.proc.poll() is not None]

    def start(self, node_id: str) -> NodeProcess:
        """Spawn ``node_id`` (its log is appended to, so restarts keep the history)."""
        node = self.nodes[node_id]
        assert not node.running(), f"{node_id} already runs"
        node.data_dir.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "raftcache", "serve", "--id", node_id]
        argv += ["--listen", f"127.0.0.1:{node.port}"]
        if node_id in self.joined:
            argv += ["--join", self.joined[node_id]]
        else:
            argv += ["--peers", self.peers]
        argv += ["--data-dir", str(node.data_dir), *self.extra_args]
        argv += self.node_args.get(node_id, [])
        # Every store stands for a host of its own unless the test gives labels (by default
        # the stores of one machine all register its name: one host for placement).
        if "--host-label" not in argv:
            argv += ["--host-label", f"host-{node_id}"]
        with node.log_path.open("ab") as log:
            node.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=node_env(),
                # Linux: the kernel SIGTERMs the node if pytest itself is killed.
                preexec_fn=parent_death_hook(),
            )
        return node

    def start_all(self) -> None:
        for node_id in self.nodes:
            self.start(node_id)

    def kill(self, node_id: str) -> int:
        """SIGKILL (``kill -9``) and reap; returns the exit code (-9)."""
        return self._signal_and_reap(node_id, signal.SIGKILL, timeout_s=WAIT_S)

    def terminate(self, node_id: str, timeout_s: float = WAIT_S) -> int:
        """SIGTERM and wait for a graceful exit; returns the exit code."""
        return self._signal_and_reap(node_id, signal.SIGTERM, timeout_s=timeout_s)

    def send_signal(self, node_id: str, sig: signal.Signals) -> None:
        node = self.nodes[node_id]
        assert node.proc is not None
        node.proc.send_signal(sig)

    async def wait_exit(self, node_id: str, timeout_s: float = WAIT_S) -> int:
        """Wait (without blocking the loop) for ``node_id``'s process to end; its exit code."""
        node = self.nodes[node_id]
        assert node.proc is not None
        async with asyncio.timeout(timeout_s):
            while node.proc.poll() is None:
                await asyncio.sleep(0.05)
        code = node.proc.returncode
        node.exit_codes.append(code)
        node.proc = None
        return code

    def _signal_and_reap(self, node_id: str, sig: signal.Signals, timeout_s: float) -> int:
        node = self.nodes[node_id]
        assert node.proc is not None, f"{node_id} is not running"
        if node.proc.poll() is None:
            node.proc.send_signal(sig)
        code = node.proc.wait(timeout_s)
        node.exit_codes.append(code)
        node.proc = None
        return code

    def stop_all(self) -> None:
        """SIGKILL every running node and reap it: the cleanup that cannot hang."""
        for node in self.nodes.values():
            if node.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    node.proc.kill()
                node.exit_codes.append(node.proc.wait())
                node.proc = None

    def logs(self) -> str:
        """Every node's log tail, for failure messages."""
        return "\n".join(n.log_tail() for n in self.nodes.values())

    def __enter__(self) -> ProcessCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def key_url(base: str, key: str) -> str:
    """``base/v1/keys/<key>`` with the key as one percent-encoded path segment."""
    return f"{base}/v1/keys/{quote(key, safe='')}"


async def get_key(
    http: aiohttp.ClientSession, base: str, key: str, consistency: str | None = None
) -> tuple[int, bytes, str | None]:
    """``GET`` a key from one node: (status, body, ETag)."""
    params = {} if consistency is None else {"consistency": consistency}
    async with http.get(key_url(base, key), params=params) as resp:
        return resp.status, await resp.read(), resp.headers.get("ETag")


async def mget(
    http: aiohttp.ClientSession, base: str, keys: Sequence[str], consistency: str | None = None
) -> list[str | None]:
    """``POST /v1/mget`` on one node: the values, base64 or None, in order."""
    params = {} if consistency is None else {"consistency": consistency}
    async with http.post(base + "/v1/mget", params=params, json={"keys": list(keys)}) as resp:
        assert resp.status == 200, await resp.text()
        values: list[str | None] = (await resp.json())["values"]
        return values


async def node_stats(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """``/v1/stats`` of one node."""
    async with http.get(base + "/v1/stats") as resp:
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def node_status(http: aiohttp.ClientSession, base: str) -> dict[str, Any] | None:
    """``/v1/status`` of one node, or None while it does not answer."""
    try:
        async with http.get(base + "/v1/status", timeout=aiohttp.ClientTimeout(total=2)) as resp:
            if resp.status != 200:
                return None
            body: dict[str, Any] = await resp.json()
            return body
    except (aiohttp.ClientError, TimeoutError):
        return None


async def wait_for(
    probe: Callable[[], Awaitable[T | None]],
    what: str,
    *,
    timeout_s: float = WAIT_S,
    cluster: ProcessCluster | None = None,
    interval_s: float = 0.1,
) -> T:
    """Poll ``probe`` every ``interval_s`` until it returns something other than None; fail
    after ``timeout_s``.

    With ``cluster``, a node process that has exited unexpectedly fails the wait at once.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if result is not None:
            return result
        if cluster is not None:
            dead = cluster.crashed()
            assert not dead, f"{dead} exited while waiting for {what}\n{cluster.logs()}"
        if time.monotonic() > deadline:
            logs = cluster.logs() if cluster is not None else ""
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}\n{logs}")
        await asyncio.sleep(interval_s)


async def eventually_equal(
    actual: Callable[[], Awaitable[T]],
    expected: T,
    what: str,
    *,
    timeout_s: float = 30.0,
    cluster: ProcessCluster | None = None,
) -> None:
    """Poll ``actual`` until it equals ``expected``; fail with the last value seen.

    For a node's own (stale) view after ``wait_applied``: ``/v1/status`` may report an index
    before the state machine holds it (see ``test_applied_index``), so the view is polled.
    """
    last: list[T] = []

    async def probe() -> bool | None:
        last[:] = [await actual()]
        return True if last[0] == expected else None

    try:
        await wait_for(probe, what, timeout_s=timeout_s, cluster=cluster)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nexpected {expected!r}\nlast seen {last!r}") from None


async def wait_for_leader(
    cluster: ProcessCluster,
    http: aiohttp.ClientSession,
    among: Iterable[NodeProcess] | None = None,
) -> NodeProcess:
    """The node that leads with every node of ``among`` (default: the running ones) agreeing."""
    nodes = list(among) if among is not None else cluster.live()

    async def probe() -> NodeProcess | None:
        statuses = await asyncio.gather(*(node_status(http, n.url) for n in nodes))
        if any(s is None for s in statuses):
            return None
        leaders = {s["leader"] for s in statuses if s is not None}
        if len(leaders) != 1:
            return None
        leader_id = leaders.pop()
        for node, status in zip(nodes, statuses, strict=True):
            if status is not None and node.node_id == leader_id and status["role"] == "leader":
                return node
        return None

    return await wait_for(probe, "an agreed leader", cluster=cluster)


async def wait_applied(
    cluster: ProcessCluster, http: aiohttp.ClientSession, node: NodeProcess, index: int
) -> dict[str, Any]:
    """Wait until ``node`` has applied the log up to ``index``; its status then."""

    async def probe() -> dict[str, Any] | None:
        status = await node_status(http, node.url)
        return status if status is not None and status["last_applied"] >= index else None

    return await wait_for(probe, f"{node.node_id} to apply index {index}", cluster=cluster)
