"""``redis-cli -c`` against real stores of many groups (``raftcache serve --groups 4``).

One interactive ``redis-cli -c`` session, started on a store's cluster-mode port (the port that
answers ``MOVED``; the plain port forwards, docs/resp.md), writes and reads one key of every
group: each command goes to the store leading the key's group, through a ``-> Redirected to
slot [N] located at host:port`` line whenever the session was connected elsewhere. Then an
operator moves a group's leadership (``raftcache leader transfer --group``) while the session
is connected to its leader, and the same session, asking the old leader, is redirected to the
new one, reads the value written before and writes through it.

Leaders move on their own in a new cluster's first seconds (the placement driver evens out the
leader counts, the preferred-leader balancer hands groups over): every check is made against
the leaders as the stores report them just before, and counts only if they still report the
same leaders just after; otherwise it runs again (``steady``).
"""

from __future__ import annotations

import asyncio
import functools
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest

from raftcache.slots import key_group, key_slot
from tests.cli.conftest import cli
from tests.e2e.nodes import WAIT_S, ProcessCluster
from tests.e2e.test_store_processes import FAST, GROUPS, group_leaders
from tests.server.cluster import free_ports

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed"),
]

T = TypeVar("T")

#: One key of each group: group id (g0..g3) → key.
KEYS = {
    f"g{g}": next(k for i in range(100) if key_group(k := f"user:{i}", GROUPS) == g)
    for g in range(GROUPS)
}


class RedisCli:
    """One interactive ``redis-cli -c -p PORT`` process fed commands on its stdin, as a user
    types them. With stdin not a terminal redis-cli still prints each reply at once, and
    ``-> Redirected to slot [N] located at host:port`` before a reply it was redirected for.
    ``port``: the port the session is connected to now (the last redirect's)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            ["redis-cli", "-c", "-p", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _line(self) -> str:
        try:
            line = self._lines.get(timeout=30)
        except queue.Empty:
            raise AssertionError("redis-cli printed nothing for 30 s") from None
        assert line is not None, f"redis-cli exited ({self.proc.poll()})"
        return line

    def run(self, command: str) -> tuple[int | None, str]:
        """Send one command: (the port it was redirected to, or None; its reply line)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self._line()
        redirected = None
        if line.startswith("-> Redirected to slot"):
            # "-> Redirected to slot [15495] located at 127.0.0.1:39535"
            slot = int(line.split("[", 1)[1].split("]", 1)[0])
            assert slot == key_slot(command.split()[1].encode()), line
            redirected = int(line.rsplit(":", 1)[1])
            self.port = redirected
            line = self._line()
        return redirected, line

    def close(self) -> int:
        """End the session as a user does (end of input); its exit code."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            code = self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(10)
            self.proc.stdout.close()
        return code


def test_redis_cli_follows_group_leaders_and_a_leader_transfer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = ProcessCluster(tmp_path, 3, extra_args=["--groups", str(GROUPS), *FAST])
    cports = dict(zip(cluster.nodes, free_ports(3), strict=True))
    for node_id in cluster.nodes:
        cluster.node_args[node_id] = ["--resp-cluster-port", str(cports[node_id])]
    assert sorted(KEYS) == [f"g{i}" for i in range(GROUPS)]
    endpoints = ["--endpoints", ",".join(cluster.endpoints), "--timeout", "20"]

    def leaders() -> dict[str, str]:
        async def fetch() -> dict[str, str]:
            async with aiohttp.ClientSession() as http:
                return await group_leaders(cluster, http)

        return asyncio.run(fetch())

    def steady(check: Callable[[dict[str, str]], T]) -> T:
        """``check(leaders)``, passed or failed with the leaders it was given still leading
        after it ran; run again when a leader moved meanwhile."""
        deadline = time.monotonic() + WAIT_S
        while True:
            before = leaders()
            try:
                result = check(before)
            except AssertionError:
                if leaders() == before or time.monotonic() > deadline:
                    raise
                continue
            if leaders() == before:
                return result
            assert time.monotonic() < deadline, f"leaders kept moving\n{cluster.logs()}"

    with cluster:
        cluster.start_all()
        # Each store's cluster port answers once it knows every group's leader's RESP address.
        led = leaders()
        for port in cports.values():
            _wait_slots_covered(port)
        # Start on a store that leads no group, or the fewest: the first command is redirected.
        counts = {n: list(led.values()).count(n) for n in cluster.nodes}
        start = min(cluster.nodes, key=lambda n: counts[n])
        session = RedisCli(cports[start])
        try:
            redirects: list[int] = []

            def run_on_leader(command: str, group: str, now: dict[str, str]) -> str:
                """``command`` (on a key of ``group``) reaches the group's leader: redirected
                there iff the session was connected to another store."""
                expected = cports[now[group]]
                was = session.port
                redirected, reply = session.run(command)
                assert redirected == (None if was == expected else expected), (command, now)
                assert session.port == expected
                if redirected is not None:
                    redirects.append(redirected)
                return reply

            def go_to_leader(group: str, key: str, now: dict[str, str]) -> dict[str, str]:
                """Connect the session to the leader of ``group`` (reading ``key``); ``now``."""
                assert run_on_leader(f"GET {key}", group, now) == f"v-{group}"
                return now

            for group, key in KEYS.items():
                reply = steady(functools.partial(run_on_leader, f"SET {key} v-{group}", group))
                assert reply == "OK"
            for group, key in KEYS.items():
                reply = steady(functools.partial(run_on_leader, f"GET {key}", group))
                assert reply == f"v-{group}"
            assert redirects, "no command was redirected"

            # Move the leadership of a group to another store (the one leading fewest groups,
            # so that the leader counts stay even and the placement driver leaves it there),
            # with the session connected to its old leader, which then answers MOVED.
            group, key = next(iter(KEYS.items()))
            for _ in range(5):  # again only if a leader moved by itself meanwhile
                now = steady(functools.partial(go_to_leader, group, key))
                old = now[group]
                others = {n: list(now.values()).count(n) for n in cluster.nodes if n != old}
                target = min(others, key=lambda n: (others[n], n))
                argv = ["leader", "transfer", "--group", group, "--to", target, *endpoints]
                assert cli(argv) == 0
                assert capsys.readouterr().out == f"leader {target}\n"
                before = leaders()
                redirected, reply = session.run(f"GET {key}")
                if before[group] == target and leaders() == before:
                    break
            assert redirected == cports[target], (old, target, before)
            assert reply == f"v-{group}"
            assert session.run(f"SET {key} moved") == (None, "OK")  # on the new leader now
            assert session.run(f"GET {key}") == (None, "moved")
            # Every other group's key still reads back (redirected to its own leader).
            for other, other_key in KEYS.items():
                if other != group:
                    reply = steady(functools.partial(run_on_leader, f"GET {other_key}", other))
                    assert reply == f"v-{other}"
        finally:
            code = session.close()
        assert code == 0
        # A one-shot redis-cli -c from any store's cluster port reads what the session wrote.
        for port in cports.values():
            argv = ["redis-cli", "-c", "-p", str(port), "GET", key]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
            assert done.stdout == "moved\n"
        assert cluster.crashed() == []


def _wait_slots_covered(port: int) -> None:
    """Wait until CLUSTER INFO on ``port`` counts all 16384 slots served (every group's
    leader's RESP address known to that store: until then it answers CLUSTERDOWN for the
    slots of a group whose leader it cannot name)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        argv = ["redis-cli", "-p", str(port), "CLUSTER", "INFO"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if "cluster_slots_ok:16384" in done.stdout:
            return
        assert time.monotonic() < deadline, done.stdout + done.stderr
        time.sleep(0.1)
