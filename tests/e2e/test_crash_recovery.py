"""End to end: ``kill -9`` of the leader in the middle of a stream of writes from several clients
loses no acknowledged write — neither once a new leader is elected, nor after every node has been
killed and restarted on its data directory.

Acknowledged means the client returned a version: the write was committed by a quorum, which
persisted it before answering, so neither a crash of the leader nor a crash of everybody can
take it back. Writes whose outcome was never reported to the caller are not checked (they may or
may not be there); the client must not surface errors through the leader change at all.
"""

from __future__ import annotations

import asyncio
import base64
from functools import partial
from pathlib import Path

import aiohttp
import pytest

from raftcache import AsyncClient, RaftcacheError
from tests.e2e.nodes import (
    FAST_ELECTIONS,
    NodeProcess,
    ProcessCluster,
    eventually_equal,
    mget,
    node_status,
    wait_applied,
    wait_for,
    wait_for_leader,
)

pytestmark = pytest.mark.e2e

WRITERS = 4
WRITES_EACH = 40
KILL_AFTER_ACKS = 40


async def _writer(
    client: AsyncClient,
    writer: int,
    acked: dict[str, bytes],
    errors: list[BaseException],
    killed: asyncio.Event,
) -> None:
    for i in range(WRITES_EACH):
        if len(acked) >= KILL_AFTER_ACKS:
            # Hold on until the leader is killed: the stream must go on after the kill, however
            # fast the first writes were (a race between fast writers and the kill otherwise).
            await killed.wait()
        key, value = f"crash/{writer}/{i:03d}", f"{writer}:{i}:".encode() + bytes([i]) * i
        try:
            await client.set(key, value)
        except RaftcacheError as exc:
            errors.append(exc)
            continue
        acked[key] = value


def _decoded(values: list[str | None]) -> list[bytes | None]:
    return [None if v is None else base64.b64decode(v) for v in values]


async def _missing(http: aiohttp.ClientSession, url: str, acked: dict[str, bytes]) -> list[str]:
    """The acknowledged writes a node's own (stale) state lacks or holds with another value."""
    keys = sorted(acked)
    stale = _decoded(await mget(http, url, keys, "stale"))
    return [k for k, v in zip(keys, stale, strict=True) if v != acked[k]]


async def _check_every_node(
    cluster: ProcessCluster, http: aiohttp.ClientSession, acked: dict[str, bytes], when: str
) -> NodeProcess:
    """Every acknowledged write, with its value: linearizably, then on each node's own state."""
    leader = await wait_for_leader(cluster, http)
    keys = sorted(acked)
    expected = [acked[k] for k in keys]
    assert _decoded(await mget(http, leader.url, keys)) == expected, when
    status = await node_status(http, leader.url)
    assert status is not None
    for node in cluster.live():
        await wait_applied(cluster, http, node, status["commit_index"])

        none: list[str] = []
        await eventually_equal(
            partial(_missing, http, node.url, acked),
            none,
            f"{when}: {node.node_id}",
            cluster=cluster,
        )
    return leader


async def test_acknowledged_writes_survive_leader_kill_and_full_restart(tmp_path: Path) -> None:
    # Three elections (start, leader kill, full restart) are set-up here, not the subject.
    with ProcessCluster(tmp_path, extra_args=FAST_ELECTIONS) as cluster:
        cluster.start_all()
        async with aiohttp.ClientSession() as http:
            old_leader = await wait_for_leader(cluster, http)
            acked: dict[str, bytes] = {}
            errors: list[BaseException] = []
            killed = asyncio.Event()
            clients = [AsyncClient(cluster.endpoints, timeout=30) for _ in range(WRITERS)]
            writers: list[asyncio.Future[None]] = []
            try:
                writers = [
                    asyncio.ensure_future(_writer(c, i, acked, errors, killed))
                    for i, c in enumerate(clients)
                ]

                async def enough_acks() -> bool | None:
                    return True if len(acked) >= KILL_AFTER_ACKS else None

                await wait_for(enough_acks, f"{KILL_AFTER_ACKS} acknowledged writes")
                assert cluster.kill(old_leader.node_id) == -9
                acked_before_kill = len(acked)
                killed.set()
                await asyncio.gather(*writers)
            finally:
                for w in writers:
                    w.cancel()  # a no-op once they finished; never left waiting on ``killed``
                for c in clients:
                    await c.close()

            assert errors == [], f"the clients surfaced errors\n{cluster.logs()}"
            assert len(acked) == WRITERS * WRITES_EACH
            assert acked_before_kill < len(acked), "the stream must go on after the kill"
            new_leader = await _check_every_node(cluster, http, acked, "after the leader died")
            assert new_leader is not old_leader

            # Full restart: every node killed (no graceful flush), then started on its directory.
            for node in cluster.live():
                assert cluster.kill(node.node_id) == -9
            cluster.start_all()
            await _check_every_node(cluster, http, acked, "after a full restart")
