"""End to end: a node whose disk was wiped is removed, re-added, and catches up by snapshot.

The procedure (what an operator does when a node lost its data directory):

1. Stop the node and delete its data directory.
2. ``DELETE /v1/members/{id}`` on any node (forwarded to the leader). The wiped node must leave
   the configuration before it comes back: it forgot its term and its vote, so as a voter it
   could vote twice in one term; and the leader's bookkeeping of what it holds is now false.
3. Start the process again on the empty directory with the usual ``--peers`` (every member, itself
   included). Until the cluster adds it, it must disturb nobody (docs/design.md): pre-vote keeps
   its campaigns from raising the others' terms, and nobody grants it a vote.
4. ``POST /v1/members {"id", "url"}`` (forwarded to the leader): the leader adds it as a learner,
   brings it up to date, then promotes it to voter; the call returns once it votes.

``raftcache serve`` has no ``--snapshot-threshold`` option (the Raft default is 10 000 entries),
so the test compacts the log explicitly with ``POST /v1/snapshot`` on the remaining nodes while
the node is away: the entries it lacks are gone from every log, and only InstallSnapshot can
bring it up to date.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import aiohttp
import pytest

from raftcache import AsyncClient
from tests.e2e.nodes import (
    NodeProcess,
    ProcessCluster,
    eventually_equal,
    get_key,
    mget,
    node_stats,
    node_status,
    wait_applied,
    wait_for_leader,
)

pytestmark = pytest.mark.e2e


async def _list_keys(http: aiohttp.ClientSession, url: str, consistency: str) -> list[str]:
    async with http.get(
        url + "/v1/keys", params={"limit": "1000", "consistency": consistency}
    ) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["next"] is None  # fewer than 1000 keys: one page
        keys: list[str] = body["keys"]
        return keys


async def _history_while_away(c: AsyncClient) -> int:
    """Writes the wiped node never saw: new keys, overwrites, deletes, a counter; the index of
    the last one."""
    for i in range(40):
        await c.set(f"during/{i:02d}", f"new {i}".encode())
    for i in range(0, 40, 4):
        await c.set(f"before/{i:02d}", b"overwritten")
        await c.delete(f"before/{i + 1:02d}")
    for _ in range(7):
        await c.incr("during/counter")
    last: int = await c.set("during/last", b"end")
    return last


async def _compact_every_log(
    cluster: ProcessCluster, http: aiohttp.ClientSession, last_write: int
) -> None:
    """Snapshot every running node once it holds ``last_write``: their logs start after it."""
    want: tuple[int, bytes, str | None] = (200, b"end", f'"{last_write}"')
    for node in cluster.live():
        await wait_applied(cluster, http, node, last_write)
        # The state itself, not only /v1/status, must hold the last write before the
        # snapshot (test_applied_index shows why the status alone is not enough yet).
        await eventually_equal(
            partial(get_key, http, node.url, "during/last", "stale"),
            want,
            f"{node.node_id} to hold the last write",
            cluster=cluster,
        )
        async with http.post(node.url + "/v1/snapshot") as resp:
            assert resp.status == 200, await resp.text()
            snap = await resp.json()
        # Covers every write above (housekeeping entries may follow: hence >=).
        assert snap["snapshot_index"] >= last_write, (node.node_id, snap)


async def _assert_same_data(
    cluster: ProcessCluster, http: aiohttp.ClientSession, leader: NodeProcess, node: NodeProcess
) -> None:
    """``node``'s own state equals the leader's: keys, values, versions, counters."""
    keys = await _list_keys(http, leader.url, "linearizable")
    assert len(keys) == 40 + 40 - 10 + 2
    await eventually_equal(
        partial(_list_keys, http, node.url, "stale"),
        keys,
        f"{node.node_id}'s keys",
        cluster=cluster,
    )
    assert await mget(http, node.url, keys, "stale") == await mget(http, leader.url, keys)
    # Versions too (a version is the log index of the key's last write).
    for key in keys:
        assert await get_key(http, node.url, key, "stale") == await get_key(http, leader.url, key)
    assert (await get_key(http, node.url, "during/counter", "stale"))[1] == b"7"
    leader_cache = (await node_stats(http, leader.url))["cache"]
    node_cache = (await node_stats(http, node.url))["cache"]
    for field in ("keys", "bytes", "expirations", "evictions"):
        assert node_cache[field] == leader_cache[field], field


async def test_wiped_node_rejoins_and_catches_up_by_snapshot(tmp_path: Path) -> None:
    with ProcessCluster(tmp_path) as cluster:
        cluster.start_all()
        async with aiohttp.ClientSession() as http, AsyncClient(cluster.endpoints, timeout=30) as c:
            leader = await wait_for_leader(cluster, http)
            victim = next(n for n in cluster.live() if n is not leader)
            for i in range(40):
                await c.set(f"before/{i:02d}", f"old {i}".encode())

            # 1-2: stop it, wipe it, remove it from the configuration.
            assert cluster.terminate(victim.node_id) == 0
            shutil.rmtree(victim.data_dir)
            removed = await c.remove_member(victim.node_id)
            assert victim.node_id not in removed["members"]

            await _compact_every_log(cluster, http, await _history_while_away(c))

            # 3-4: start it empty, add it back; the call returns once it votes.
            cluster.start(victim.node_id)
            added = await c.add_member(victim.node_id, victim.url)
            assert victim.node_id in added["members"]

            leader = await wait_for_leader(cluster, http)
            leader_status = await node_status(http, leader.url)
            assert leader_status is not None
            assert sorted(leader_status["members"]) == sorted(cluster.nodes)
            await wait_applied(cluster, http, victim, leader_status["commit_index"])
            received = (await node_stats(http, victim.url))["raft"]["rpcs_received"]
            assert received.get("InstallSnapshot", 0) >= 1, f"{received}\n{cluster.logs()}"
            await _assert_same_data(cluster, http, leader, victim)
