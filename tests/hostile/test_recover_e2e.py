"""Disaster recovery with real processes: a 3-node cluster takes writes, all three crash and
two are lost for good; ``raftcache recover`` turns the third into a one-node cluster that leads
with every committed write, and a fresh node joins it with ``POST /v1/members`` and catches up.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from .procs import Node, Procs, wait_exit, wait_status

pytestmark = pytest.mark.e2e

KEYS = 30
INCRS = 10
TIMEOUT = aiohttp.ClientTimeout(total=60)


async def find_leader(session: aiohttp.ClientSession, nodes: list[Node]) -> Node:
    async with asyncio.timeout(30):
        while True:
            for node in nodes:
                try:
                    async with session.get(node.url + "/v1/status") as resp:
                        status = await resp.json()
                except aiohttp.ClientError:
                    continue
                if status["role"] == "leader":
                    return node
            await asyncio.sleep(0.1)


async def write_data(session: aiohttp.ClientSession, nodes: list[Node]) -> None:
    for i in range(KEYS):
        node = nodes[i % len(nodes)]  # followers forward to the leader
        async with session.put(f"{node.url}/v1/keys/k{i}", data=f"v{i}".encode()) as resp:
            assert resp.status == 200, await resp.text()
    for _ in range(INCRS):
        async with session.post(nodes[0].url + "/v1/keys/counter/incr") as resp:
            assert resp.status == 200, await resp.text()


async def read_all(session: aiohttp.ClientSession, node: Node, consistency: str) -> dict[str, str]:
    keys = [f"k{i}" for i in range(KEYS)] + ["counter"]
    url = f"{node.url}/v1/mget?consistency={consistency}"
    async with session.post(url, json={"keys": keys}) as resp:
        assert resp.status == 200, await resp.text()
        values = (await resp.json())["values"]
    return {k: v for k, v in zip(keys, values, strict=True) if v is not None}


def expected() -> dict[str, str]:
    import base64

    data = {f"k{i}": base64.b64encode(f"v{i}".encode()).decode() for i in range(KEYS)}
    data["counter"] = base64.b64encode(str(INCRS).encode()).decode()
    return data


async def test_recover_a_survivor_and_grow_again(tmp_path: Path) -> None:
    procs = Procs(tmp_path)
    old = [procs.add(f"n{i}") for i in (1, 2, 3)]
    try:
        for node in old:
            procs.start(node, old)
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            survivor = await write_then_lose_two(session, procs, old)
            await run_recover(survivor)
            procs.start(survivor, [survivor])
            await wait_status(session, survivor, {"role": "leader", "members": [survivor.node_id]})
            assert await read_all(session, survivor, "linearizable") == expected()
            fresh = await join_fresh_node(session, procs, survivor)
        for node in (survivor, fresh):
            assert node.popen is not None
            node.popen.send_signal(signal.SIGTERM)
        for node in (survivor, fresh):
            assert node.popen is not None
            assert await wait_exit(node.popen) == 0
    finally:
        procs.stop_all()


async def write_then_lose_two(
    session: aiohttp.ClientSession, procs: Procs, old: list[Node]
) -> Node:
    """Writes through every node, then every node crashes; returns the survivor, a node that
    had applied every committed write (the other two are never started again)."""
    await find_leader(session, old)
    await write_data(session, old)
    leader = await find_leader(session, old)
    async with session.get(leader.url + "/v1/status") as resp:
        committed = (await resp.json())["commit_index"]
    survivor = next(n for n in old if n is not leader)
    await wait_until_applied(session, survivor, committed)
    for node in old:
        procs.kill(node)
    return survivor


async def run_recover(survivor: Node) -> None:
    """``raftcache recover`` as an operator runs it; a cluster bootstrapped from --peers never
    recorded the URLs, so ours is given."""
    args = [sys.executable, "-m", "raftcache", "recover", "--data-dir", str(survivor.data_dir)]
    args += ["--force-new-cluster", "--url", survivor.url]
    result = await asyncio.to_thread(
        subprocess.run, args, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert f"recovered {survivor.node_id}" in result.stdout


async def join_fresh_node(session: aiohttp.ClientSession, procs: Procs, survivor: Node) -> Node:
    """A node with an empty data directory joins with POST /v1/members and catches up; the
    two-node cluster then takes writes through either node."""
    fresh = procs.add("n4")
    procs.start(fresh, [survivor, fresh])
    async with session.post(
        survivor.url + "/v1/members", json={"id": "n4", "url": fresh.url}
    ) as resp:
        assert resp.status == 200, await resp.text()
    members = sorted([survivor.node_id, "n4"])
    await wait_status(session, fresh, {"members": members, "leader": survivor.node_id})
    await wait_status(session, survivor, {"members": members})
    async with asyncio.timeout(30):
        while await read_all(session, fresh, "stale") != expected():
            await asyncio.sleep(0.1)
    async with session.put(fresh.url + "/v1/keys/after", data=b"grown") as resp:
        assert resp.status == 200, await resp.text()
    async with session.get(survivor.url + "/v1/keys/after") as resp:
        assert await resp.read() == b"grown"
    return fresh


async def wait_until_applied(session: aiohttp.ClientSession, node: Node, index: int) -> None:
    async with asyncio.timeout(30):
        while True:
            async with session.get(node.url + "/v1/status") as resp:
                if (await resp.json())["last_applied"] >= index:
                    return
            await asyncio.sleep(0.05)
