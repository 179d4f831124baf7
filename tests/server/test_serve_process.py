"""End to end: real ``raftcache serve`` processes on loopback — tokens from the environment,
JSON logs, SIGTERM → graceful exit 0, restart from the data directory, locked directory → 1,
bad options → 2."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest

from .cluster import free_ports

pytestmark = pytest.mark.e2e

AUTH = {"Authorization": "Bearer client-secret"}


@dataclass
class Proc:
    node_id: str
    url: str
    args: list[str]
    log: Path
    popen: subprocess.Popen[bytes]


def spawn(node_id: str, args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "raftcache", "serve", *args],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            env=env,
        )


def node_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTCACHE_")}
    env["RAFTCACHE_CLUSTER_TOKEN"] = "cluster-secret"
    env["RAFTCACHE_CLIENT_TOKEN"] = "client-secret"
    env["RAFTCACHE_LOG_FORMAT"] = "json"
    return env


async def wait_exit(popen: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    async with asyncio.timeout(timeout):
        while popen.poll() is None:
            await asyncio.sleep(0.05)
    return popen.returncode


async def wait_healthy(session: aiohttp.ClientSession, url: str, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                async with session.get(url + "/v1/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


@pytest.fixture
async def procs(tmp_path: Path) -> AsyncIterator[list[Proc]]:
    ports = free_ports(3)
    peers = ",".join(f"n{i + 1}=http://127.0.0.1:{p}" for i, p in enumerate(ports))
    started: list[Proc] = []
    for i, port in enumerate(ports):
        node_id = f"n{i + 1}"
        args = [
            "--id",
            node_id,
            "--listen",
            f"127.0.0.1:{port}",
            "--peers",
            peers,
            "--data-dir",
            str(tmp_path / node_id),
        ]
        log = tmp_path / f"{node_id}.log"
        started.append(
            Proc(
                node_id,
                f"http://127.0.0.1:{port}",
                args,
                log,
                spawn(node_id, args, log, node_env()),
            )
        )
    try:
        yield started
    finally:
        for proc in started:
            if proc.popen.poll() is None:
                proc.popen.kill()
                proc.popen.wait()


def log_events(log: Path) -> list[dict[str, object]]:
    events = []
    for line in log.read_bytes().splitlines():
        events.append(orjson.loads(line))  # every line is one JSON object
    return events


async def test_cluster_of_processes(procs: list[Proc], tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        for proc in procs:
            await wait_healthy(session, proc.url)
        async with session.put(procs[0].url + "/v1/keys/k", data=b"durable") as resp:
            assert resp.status == 401  # the client token came from the environment
        async with session.put(procs[0].url + "/v1/keys/k", data=b"durable", headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
        async with session.get(procs[1].url + "/v1/status", headers=AUTH) as resp:
            leader = (await resp.json())["leader"]
        victim = next(p for p in procs if p.node_id != leader)

        # A second process on a data directory in use refuses to start (exit 1).
        other_port = free_ports(1)[0]
        args = list(victim.args)
        args[args.index("--listen") + 1] = f"127.0.0.1:{other_port}"
        locked = spawn("dup", args, tmp_path / "dup.log", node_env())
        assert await wait_exit(locked) == 1
        assert any(e["event"] == "cannot start node" for e in log_events(tmp_path / "dup.log"))

        # SIGTERM: graceful stop, exit 0, and the log says so.
        victim.popen.send_signal(signal.SIGTERM)
        assert await wait_exit(victim.popen) == 0
        events = [e["event"] for e in log_events(victim.log)]
        assert events[-3:] == ["shutdown requested", "node stopping", "node stopped"]

        # Writes go on without it; restarted from its directory it catches up.
        live = next(p for p in procs if p is not victim)
        async with session.put(live.url + "/v1/keys/k2", data=b"later", headers=AUTH) as resp:
            assert resp.status == 200
        victim.popen = spawn(victim.node_id, victim.args, victim.log, node_env())
        await wait_healthy(session, victim.url)
        async with asyncio.timeout(20):
            while True:
                async with session.get(
                    victim.url + "/v1/keys/k2?consistency=stale", headers=AUTH
                ) as resp:
                    if resp.status == 200:
                        assert await resp.read() == b"later"
                        break
                await asyncio.sleep(0.1)
        async with session.get(victim.url + "/v1/keys/k?consistency=stale", headers=AUTH) as resp:
            assert await resp.read() == b"durable"

    for proc in procs:
        proc.popen.send_signal(signal.SIGINT if proc is victim else signal.SIGTERM)
    for proc in procs:
        assert await wait_exit(proc.popen) == 0, proc.log.read_text()


def test_bad_options_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "raftcache",
            "serve",
            "--id",
            "n9",
            "--listen",
            "127.0.0.1:1",
            "--peers",
            "n1=http://127.0.0.1:1",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        env=node_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert b"n9 is not listed in --peers" in result.stderr
