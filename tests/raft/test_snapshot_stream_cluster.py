"""A follower far behind catches up by a streamed snapshot and holds the same data.

Three RaftNodes on an in-memory network, each with a real FileStorage and the real cache state
machine (which encodes snapshots straight into the storage and restores them as a stream). One
follower is cut off while the others write and compact their logs; once back, the leader can
only send it the snapshot — in many chunks, since it is several times the chunk size.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from raftcache.cache import CacheStateMachine, encode_set
from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.raft.config import RaftConfig
from raftcache.raft.core import Role
from raftcache.raft.node import RaftNode
from raftcache.storage.file import FileStorage
from raftcache.storage.views import SnapshotView
from tests.raft.snapshot_stream_helpers import stored_meta

IDS = ["n1", "n2", "n3"]
CONFIG = RaftConfig(
    election_timeout_min=0.6,
    election_timeout_max=1.2,
    heartbeat_interval=0.05,
    snapshot_threshold=0,  # snapshots are taken by the test, at known points
    snapshot_chunk_size=16 * 1024,
    rpc_timeout=3.0,
)


async def _leader(nodes: dict[str, RaftNode], among: list[str]) -> RaftNode:
    async with asyncio.timeout(30):
        while True:
            leaders = [nodes[i] for i in among if nodes[i].role is Role.LEADER]
            if leaders:
                return max(leaders, key=lambda n: n.current_term)
            await asyncio.sleep(0.02)


async def _write(nodes: dict[str, RaftNode], among: list[str], command: bytes) -> None:
    async with asyncio.timeout(30):
        while True:
            leader = await _leader(nodes, among)
            try:
                await leader.propose(command, timeout=5.0)
                return
            except Exception:  # leadership moved: retry on the new leader
                await asyncio.sleep(0.05)


async def test_far_behind_follower_catches_up_by_a_streamed_snapshot(tmp_path: Path) -> None:
    hub = InMemoryHub()
    machines = {i: CacheStateMachine() for i in IDS}
    nodes = {
        i: RaftNode(
            i,
            IDS,
            InMemoryNetwork(i, hub=hub, seed=k),
            FileStorage(tmp_path / i),
            machines[i],
            CONFIG,
            rng=random.Random(k),
        )
        for k, i in enumerate(IDS)
    }
    for node in nodes.values():
        await node.start()
    try:
        leader = await _leader(nodes, IDS)
        lagging = next(i for i in IDS if i != leader.node_id)
        others = [i for i in IDS if i != lagging]
        hub.fail_node(lagging)
        value = random.Random(1).randbytes(1500)
        for k in range(120):  # ~180 KB of values: about a dozen 16 KiB chunks
            await _write(nodes, others, encode_set(f"key-{k}", value + bytes([k]), now=0.0))
        for i in others:
            await nodes[i].take_snapshot()
        leader = await _leader(nodes, others)
        snap_index = leader.core.log.snapshot_index
        assert snap_index >= 120
        # The leader sends from its snapshot file, not from bytes held in memory.
        assert isinstance(leader.core.snapshot_data, SnapshotView)
        assert len(leader.core.snapshot_data) > 8 * CONFIG.snapshot_chunk_size
        hub.recover_node(lagging)
        await _write(nodes, IDS, encode_set("after", b"x", now=0.0))
        leader = await _leader(nodes, IDS)
        async with asyncio.timeout(60):
            while nodes[lagging].last_applied < leader.commit_index:
                await asyncio.sleep(0.02)
        follower = nodes[lagging]
        chunks = follower.stats.rpcs_received["InstallSnapshot"]
        print(f"\n{lagging} caught up by a snapshot of index {snap_index} in {chunks} chunks")
        assert chunks > 8
        assert follower.core.log.snapshot_index >= snap_index
        meta = stored_meta(tmp_path / lagging)
        assert meta is not None
        assert meta.last_index >= snap_index
        assert isinstance(follower.core.snapshot_data, SnapshotView)
        # Same data: replicas in the same state produce byte-identical snapshots.
        assert machines[lagging].snapshot() == machines[leader.node_id].snapshot()
        assert machines[lagging].get("key-7", 0.0) is not None
        assert machines[lagging].get("after", 0.0) is not None
    finally:
        for node in nodes.values():
            await node.stop()
