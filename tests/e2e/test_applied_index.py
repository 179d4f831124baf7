"""End to end: a node's ``last_applied`` is what its state machine holds — so its stale reads and
its snapshots include every entry up to it.

How the tests open the window where it matters: a follower is paused (SIGSTOP) while the leader
commits a few megabytes, then resumed; it catches up in AppendEntries of about 1 MiB each, and
each one takes a disk write and an fsync. Meanwhile we poll its ``/v1/status`` and its own
(stale) reads as fast as we can.

These tests caught a real bug (fixed): ``RaftCore.ready()`` advances ``core.applied`` when it
*hands out* committed entries, and the driver applies them only after the disk write in a worker
thread. ``last_applied`` and snapshots then claimed entries the state machine did not hold yet, and
a snapshot taken in that window lost acknowledged writes after a restart. The driver now keeps
its own applied index (``RaftNode._applied``), advanced entry by entry as the state machine applies.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.nodes import (
    WAIT_S,
    NodeProcess,
    ProcessCluster,
    get_key,
    key_url,
    node_status,
    wait_applied,
    wait_for_leader,
)

pytestmark = pytest.mark.e2e


ROUNDS = 5
VALUES_PER_ROUND = 24
VALUE = bytes(200_000)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessCluster]:
    with ProcessCluster(Path(tmp_path_factory.mktemp("e2e-applied"))) as running:
        running.start_all()
        yield running


async def _commit_while_paused(
    http: aiohttp.ClientSession, leader: NodeProcess, follower: NodeProcess, prefix: str
) -> list[tuple[int, str]]:
    """Pause ``follower``, commit a few MB through the leader, resume it: (version, key)s."""
    assert follower.proc is not None
    follower.proc.send_signal(signal.SIGSTOP)
    try:
        written = []
        for i in range(VALUES_PER_ROUND):
            key = f"{prefix}/{i:02d}"
            async with http.put(key_url(leader.url, key), data=VALUE) as resp:
                assert resp.status == 200, await resp.text()
                written.append(((await resp.json())["version"], key))
        return written
    finally:
        follower.proc.send_signal(signal.SIGCONT)


async def _ahead_of_reads(
    http: aiohttp.ClientSession, node: NodeProcess, written: list[tuple[int, str]]
) -> tuple[int, str, int] | None:
    """One probe: (last_applied, key, version) when the node claims to have applied a write
    that its own stale read does not show; None when consistent or not decidable."""
    status = await node_status(http, node.url)
    if status is None:
        return None
    applied = status["last_applied"]
    covered = [(v, k) for v, k in written if v <= applied]
    if not covered:
        return None
    version, key = covered[-1]
    code, _, _ = await get_key(http, node.url, key, "stale")
    return (applied, key, version) if code == 404 else None


async def _caught_up(http: aiohttp.ClientSession, node: NodeProcess, index: int) -> bool:
    status = await node_status(http, node.url)
    return status is not None and status["last_applied"] >= index


async def test_last_applied_never_runs_ahead_of_the_nodes_own_reads(
    cluster: ProcessCluster,
) -> None:
    async with aiohttp.ClientSession() as http:
        leader = await wait_for_leader(cluster, http)
        follower = next(n for n in cluster.live() if n is not leader)
        violations: list[tuple[int, str, int]] = []
        for round_no in range(ROUNDS):
            written = await _commit_while_paused(http, leader, follower, f"ahead/{round_no}")
            deadline = time.monotonic() + WAIT_S
            while not await _caught_up(http, follower, written[-1][0]):
                assert time.monotonic() < deadline, cluster.logs()
                found = await _ahead_of_reads(http, follower, written)
                if found is not None:
                    violations.append(found)
            if violations:
                break
        assert violations == [], (
            f"{follower.node_id} reported last_applied (first figure) while its stale read "
            f"of a key written at a lower version (last figure) was 404: {violations[:5]}"
        )


async def _missing_on(
    http: aiohttp.ClientSession, node: NodeProcess, keys: list[str], timeout_s: float
) -> list[str]:
    """The keys ``node``'s own state still lacks after ``timeout_s`` of polling."""
    deadline = time.monotonic() + timeout_s
    missing = keys
    while True:
        missing = [k for k in missing if (await get_key(http, node.url, k, "stale"))[0] != 200]
        if not missing or time.monotonic() > deadline:
            return missing
        await asyncio.sleep(0.2)


async def test_snapshot_while_catching_up_then_restart_keeps_every_write(
    cluster: ProcessCluster,
) -> None:
    """``POST /v1/snapshot`` on a follower halfway through catching up, then kill -9 and restart
    it (it restores that snapshot and replays the log after it): it must hold every write."""
    async with aiohttp.ClientSession() as http:
        keys: list[str] = []
        for round_no in range(3):
            leader = await wait_for_leader(cluster, http)
            follower = next(n for n in cluster.live() if n is not leader)
            written = await _commit_while_paused(http, leader, follower, f"snap/{round_no}")
            keys += [k for _, k in written]
            halfway = written[len(written) // 2][0]
            deadline = time.monotonic() + WAIT_S
            while not await _caught_up(http, follower, halfway):
                # No sleep: as close to the middle of the catch-up as we can get.
                assert time.monotonic() < deadline, cluster.logs()
            async with http.post(follower.url + "/v1/snapshot") as resp:
                assert resp.status == 200, await resp.text()
                snapshot = await resp.json()
            assert await _missing_on(http, follower, keys, WAIT_S) == [], cluster.logs()

            cluster.kill(follower.node_id)
            cluster.start(follower.node_id)
            status = await node_status(http, leader.url)
            assert status is not None
            await wait_applied(cluster, http, follower, status["commit_index"])
            missing = await _missing_on(http, follower, keys, 3.0)
            assert missing == [], (
                f"round {round_no}: after a restart {follower.node_id} lacks {len(missing)} "
                f"acknowledged writes it held before (its snapshot: {snapshot}): {missing[:8]}"
            )
