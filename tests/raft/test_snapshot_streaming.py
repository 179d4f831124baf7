"""A follower receives InstallSnapshot chunks straight to disk (FileStorage), at contiguous
offsets only, and installs the snapshot atomically after the last one."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftcache.raft.messages import InstallSnapshotRequest
from raftcache.storage.file import FileStorage
from raftcache.storage.memory import MemoryStorage
from tests.raft.sim import SimCluster
from tests.raft.snapshot_stream_helpers import (
    CONF,
    DigestMachine,
    chunk,
    digest,
    feed,
    requests,
    seed_storage,
    start_follower,
    stored_meta,
    temp_files,
)
from tests.raft.test_cluster_snapshots import SNAP

SIZE = 4096


@pytest.mark.parametrize("streaming_restore", [True, False])
async def test_chunks_go_to_disk_and_nothing_shows_before_the_last(
    tmp_path: Path, streaming_restore: bool
) -> None:
    storage = FileStorage(tmp_path)
    seed_storage(storage)
    machine = DigestMachine(streaming=streaming_restore)
    node = await start_follower(storage, machine)
    try:
        assert node.last_applied == 3
        assert machine.restores == 1
        reqs = list(requests(7, 6, SIZE, index=50))
        for req in reqs[:-1]:
            resp = await node.handle_install_snapshot(req)
            assert (resp.success, resp.next_offset) == (True, req.offset + SIZE)
            # A partial snapshot is never visible: not on disk, not in the core or the machine.
            assert stored_meta(tmp_path) is not None
            assert stored_meta(tmp_path).last_index == 3  # type: ignore[union-attr]
            assert node.core.log.snapshot_index == 3
            assert node.core.log.last_index() == 6
            assert node.last_applied == 3
            assert machine.restores == 1
            assert len(temp_files(tmp_path)) == 1
        resp = await node.handle_install_snapshot(reqs[-1])
        assert (resp.success, resp.next_offset) == (True, 6 * SIZE)
        meta = stored_meta(tmp_path)
        assert meta is not None
        assert (meta.last_index, meta.last_term) == (50, 1)
        assert meta.configuration == CONF
        assert temp_files(tmp_path) == []
        assert node.core.log.snapshot_index == 50
        assert node.core.commit_index == 50
        assert node.last_applied == 50
        assert node.core.log.last_index() == 50  # the old log (4..6) conflicts: dropped
        assert (machine.digest, machine.size) == (digest(7, 6, SIZE), 6 * SIZE)
        assert machine.restores == 2
    finally:
        await node.stop()
    # A restart reads back exactly the installed snapshot, and an empty log after it.
    again = FileStorage(tmp_path)
    recovered = again.load()
    assert recovered.snapshot is not None
    assert recovered.snapshot.last_index == 50
    assert recovered.entries == []
    reader = again.open_snapshot_reader()
    assert reader is not None
    assert reader.size == 6 * SIZE
    assert reader.read_at(SIZE, SIZE) == chunk(7, 1, SIZE)
    reader.close()
    again.close()


async def test_duplicate_and_out_of_order_chunks_are_answered_with_the_expected_offset(
    tmp_path: Path,
) -> None:
    storage = FileStorage(tmp_path)
    seed_storage(storage)
    machine = DigestMachine()
    node = await start_follower(storage, machine)
    try:
        reqs = list(requests(8, 5, SIZE, index=40))
        await feed(node, iter(reqs[:2]))
        dup = await node.handle_install_snapshot(reqs[1])
        assert (dup.success, dup.next_offset) == (False, 2 * SIZE)
        gap = await node.handle_install_snapshot(reqs[3])
        assert (gap.success, gap.next_offset) == (False, 2 * SIZE)
        early_last = await node.handle_install_snapshot(reqs[4])
        assert (early_last.success, early_last.next_offset) == (False, 2 * SIZE)
        assert node.core.log.snapshot_index == 3  # a done chunk out of order installs nothing
        # The leader resends from the offset it was given: the bytes come out exactly once.
        await feed(node, iter(reqs[2:]))
        assert node.core.log.snapshot_index == 40
        assert (machine.digest, machine.size) == (digest(8, 5, SIZE), 5 * SIZE)
    finally:
        await node.stop()


async def test_a_new_transfer_or_a_newer_leader_aborts_the_partial_one(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    seed_storage(storage)
    machine = DigestMachine()
    node = await start_follower(storage, machine)
    try:
        first = list(requests(1, 4, SIZE, index=30))
        await feed(node, iter(first[:2]))
        assert len(temp_files(tmp_path)) == 1
        # Offset 0 of another snapshot: the partial one is dropped, its file deleted.
        second = list(requests(2, 4, SIZE, index=35))
        await feed(node, iter(second[:1]))
        assert len(temp_files(tmp_path)) == 1
        stale = await node.handle_install_snapshot(first[2])
        assert (stale.success, stale.next_offset) == (False, 0)
        # A newer leader's chunk mid-stream: nothing of the old transfer can be resumed.
        newer = list(requests(3, 4, SIZE, index=35, term=2, leader="n2"))
        resp = await node.handle_install_snapshot(newer[1])
        assert (resp.term, resp.success, resp.next_offset) == (2, False, 0)
        assert temp_files(tmp_path) == []
        assert node.core.log.snapshot_index == 3
        await feed(node, iter(newer))
        assert node.core.log.snapshot_index == 35
        assert machine.digest == digest(3, 4, SIZE)
    finally:
        await node.stop()


async def test_stale_terms_and_unknown_transfers(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    seed_storage(storage, term=3)
    node = await start_follower(storage, DigestMachine())
    try:
        old = InstallSnapshotRequest(2, "n2", 30, 2, 0, b"x" * 10, False, CONF.encode())
        resp = await node.handle_install_snapshot(old)
        assert (resp.term, resp.success, resp.next_offset) == (3, False, 0)
        assert temp_files(tmp_path) == []
        # Mid-stream with no transfer under way: start over from 0.
        mid = InstallSnapshotRequest(3, "n2", 30, 2, 4096, b"x" * 10, False, CONF.encode())
        resp = await node.handle_install_snapshot(mid)
        assert (resp.term, resp.success, resp.next_offset) == (3, False, 0)
        assert node.leader_id == "n2"  # a current-term sender is followed all the same
    finally:
        await node.stop()


async def test_a_snapshot_the_log_already_covers_is_acknowledged_without_storing(
    tmp_path: Path,
) -> None:
    storage = FileStorage(tmp_path)
    seed_storage(storage, snapshot=(10, b"mine"), entries=0)
    machine = DigestMachine()
    node = await start_follower(storage, machine)
    try:
        assert node.core.commit_index == 10
        resp = await feed(node, requests(4, 3, SIZE, index=8))
        assert resp.next_offset == 3 * SIZE
        assert temp_files(tmp_path) == []
        meta = stored_meta(tmp_path)
        assert meta is not None
        assert meta.last_index == 10
        assert node.core.log.snapshot_index == 10
        assert machine.restores == 1
    finally:
        await node.stop()


class BaseOnlyStorage:
    """A storage with only the base ``Storage`` protocol (no streaming): the node must fall
    back to assembling chunks in memory and ``save_snapshot``."""

    def __init__(self) -> None:
        self._inner = MemoryStorage()
        for name in (
            "bind",
            "record_bootstrap",
            "load",
            "set_hard_state",
            "append",
            "sync",
            "save_snapshot",
            "load_snapshot",
            "close",
            "crash",
        ):
            setattr(self, name, getattr(self._inner, name))


@pytest.mark.looptime
async def test_a_storage_without_streaming_still_installs_snapshots() -> None:
    c = SimCluster(3, seed=41, config=SNAP)
    for i in c.ids:
        c.storages[i] = BaseOnlyStorage()  # type: ignore[assignment]
    await c.start()
    try:
        leader = await c.wait_leader()
        assert not leader._snapshots.streaming
        lagging = next(i for i in c.ids if i != leader.node_id)
        c.hub.fail_node(lagging)
        for n in range(60):
            await c.propose(f"s{n}".encode())
        leader = await c.wait_leader()
        assert leader.core.log.snapshot_index > 0
        c.hub.recover_node(lagging)
        await c.propose(b"last")
        leader = await c.wait_leader()
        await c.wait_applied(leader.commit_index, timeout=30)
        assert c.nodes[lagging].core.log.snapshot_index > 0
        assert c.machines[lagging].commands() == c.machines[leader.node_id].commands()
    finally:
        await c.stop()
