"""Memory stays flat while a snapshot many times the chunk size crosses the wire.

The follower writes each chunk to a temp file (FileStorage) and restores from disk; the leader
reads each chunk from its snapshot file when it sends it. Peaks are measured with tracemalloc
(every Python allocation, worker threads included) from just before the transfer to just after
the install, above what was allocated before (the test's own chunks on the follower side), and
printed; the bound is two chunks plus a constant — the snapshot is 64 chunks.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import tracemalloc
from pathlib import Path

from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.raft.config import RaftConfig
from raftcache.raft.core import Role
from raftcache.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    RequestVoteRequest,
    RequestVoteResponse,
)
from raftcache.raft.node import RaftNode
from raftcache.storage.base import SnapshotMeta
from raftcache.storage.file import FileStorage
from tests.raft.snapshot_stream_helpers import (
    CONF,
    SLOW,
    DigestMachine,
    chunk,
    digest,
    requests,
    seed_storage,
    start_follower,
)

CHUNK = 256 * 1024
COUNT = 64  # a 16 MiB snapshot
BOUND = 2 * CHUNK + 512 * 1024


class Peak:
    """tracemalloc's peak above the level when measuring began."""

    def __enter__(self) -> Peak:
        tracemalloc.start()
        self.base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = tracemalloc.get_traced_memory()[1] - self.base
        tracemalloc.stop()


async def test_follower_install_memory_stays_flat(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    seed_storage(storage)
    machine = DigestMachine()
    node = await start_follower(storage, machine)
    try:
        # Made before measuring: the peak is what the node allocates on top of them.
        reqs = list(requests(11, COUNT, CHUNK, index=500))
        with Peak() as m:
            for req in reqs:
                resp = await node.handle_install_snapshot(req)
                assert resp.success
            assert node.core.log.snapshot_index == 500
        size = COUNT * CHUNK
        print(f"\nfollower install: snapshot {size} B in {CHUNK} B chunks, peak {m.peak} B")
        assert machine.digest == digest(11, COUNT, CHUNK)
        assert m.peak < BOUND, f"peak {m.peak} B for a {size} B snapshot"
    finally:
        await node.stop()


class HashingFollower:
    """n2 as the leader sees it: grants votes, hashes snapshot chunks as they come (contiguous
    only) and keeps nothing else; its log is empty until the snapshot, so the leader must send
    one."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.received = 0
        self.last = 0
        self.installed = asyncio.Event()

    async def handle_request_vote(self, req: RequestVoteRequest) -> RequestVoteResponse:
        return RequestVoteResponse(req.term, True, req.pre_vote)

    async def handle_append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        if req.prev_log_index > self.last:
            return AppendEntriesResponse(
                req.term, False, conflict_index=self.last + 1, last_log_index=self.last
            )
        self.last = req.prev_log_index + len(req.entries)
        return AppendEntriesResponse(req.term, True, self.last, last_log_index=self.last)

    async def handle_install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
        if req.offset != self.received:
            return InstallSnapshotResponse(req.term, False, self.received)
        self.hash.update(req.data)
        self.received += len(req.data)
        if req.done:
            self.last = req.last_included_index
            self.installed.set()
        return InstallSnapshotResponse(req.term, True, self.received)


def _seed_leader_snapshot(storage: FileStorage, index: int) -> None:
    storage.bind("n1")
    storage.load()
    with storage.snapshot_writer(SnapshotMeta(index, 1, CONF)) as writer:
        for i in range(COUNT):
            writer.write(chunk(12, i, CHUNK))
        writer.commit()
    storage.set_hard_state(1, None)
    storage.sync()


async def test_leader_send_memory_stays_flat(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    _seed_leader_snapshot(storage, 300)
    hub = InMemoryHub()
    follower = HashingFollower()
    follower_net = InMemoryNetwork("n2", hub=hub, seed=2)
    follower_net.register_handlers(follower)
    await follower_net.start()
    config = RaftConfig(
        election_timeout_min=0.3,
        election_timeout_max=0.6,
        heartbeat_interval=0.05,
        snapshot_threshold=0,
        snapshot_chunk_size=CHUNK,
        rpc_timeout=SLOW.rpc_timeout,
    )
    machine = DigestMachine()
    net = InMemoryNetwork("n1", hub=hub, seed=1)
    node = RaftNode("n1", ["n1", "n2"], net, storage, machine, config, rng=random.Random(3))
    try:
        await node.start()  # restores from disk, then waits an election timeout: measure now
        assert machine.digest == digest(12, COUNT, CHUNK)
        with Peak() as m:
            async with asyncio.timeout(60):
                await follower.installed.wait()
        size = COUNT * CHUNK
        print(f"\nleader send: snapshot {size} B in {CHUNK} B chunks, peak {m.peak} B")
        assert node.role is Role.LEADER
        assert follower.received == size
        assert follower.hash.hexdigest() == digest(12, COUNT, CHUNK)
        # The peak includes the in-memory network's copy of each chunk (it models a wire).
        assert m.peak < BOUND, f"peak {m.peak} B for a {size} B snapshot"
        async with asyncio.timeout(30):  # and replication carries on after the snapshot
            while node.core.progress["n2"].match_index <= 300:
                await asyncio.sleep(0.01)
    finally:
        await node.stop()
        await follower_net.stop()
