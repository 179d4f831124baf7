"""Backups and restores through real RaftNodes (InMemoryNetwork + MemoryStorage, virtual time)."""

from __future__ import annotations

import pytest

from raftcache.cache.backup import BackupFormatError, BackupInfo, encode_backup, verify_backup
from raftcache.cache.backup_service import Backups
from raftcache.cache.snapshot import SnapshotFormatError
from raftcache.raft.errors import NotLeaderError
from tests.cache.cluster import CacheCluster

pytestmark = pytest.mark.looptime


def file_of(info: BackupInfo, snapshot: bytes) -> bytes:
    return b"".join(encode_backup(info, snapshot))


async def test_backup_then_restore_brings_back_exactly_the_saved_state_everywhere() -> None:
    async with CacheCluster(3) as c:
        leader = await c.leader()
        svc = c.services[leader]
        for i in range(40):
            await svc.set(f"k{i:02d}", f"saved-{i}".encode(), ttl=3600.0 if i % 2 else None)
        await svc.incr("counter", 5)
        info, snapshot = await svc.backups.capture()
        assert info.index == c.machines[leader].last_index
        assert info.term == c.nodes[leader].current_term
        assert info.node == leader
        saved = {k: (await svc.get(k)) for k in [f"k{i:02d}" for i in range(40)] + ["counter"]}

        # Change everything: overwrite, delete, add.
        for i in range(0, 40, 3):
            await svc.set(f"k{i:02d}", b"changed")
        await svc.delete("k01")
        await svc.set("new", b"after the backup")

        small = Backups(
            c.nodes[leader],
            c.machines[leader],
            c.clock,
            chunk_bytes=100,
            ensure_command_version=svc.ensure_command_version,
        )
        _, result = await small.restore(file_of(info, snapshot))
        assert result.keys == 41
        await c.settle()
        for node_id in c.ids:
            machine, now = c.machines[node_id], c.clock()
            keys, _ = machine.list_keys("", None, 1000, now)
            assert sorted(keys) == sorted(saved)
            for key, item in saved.items():
                got = machine.get(key, now)
                assert got is not None
                assert item is not None
                assert (got.value, got.expires_at) == (item.value, item.expires_at)
                assert got.version == result.version
        assert c.machines[leader].snapshot() == c.machines[c.follower(leader)].snapshot()


async def test_followers_refuse_and_bad_files_propose_nothing() -> None:
    async with CacheCluster(3) as c:
        leader = await c.leader()
        svc = c.services[leader]
        await svc.set("k", b"v")
        follower = c.services[c.follower(leader)]
        with pytest.raises(NotLeaderError):
            await follower.backups.capture()
        info, snapshot = await svc.backups.capture()
        data = file_of(info, snapshot)
        with pytest.raises(NotLeaderError):
            await follower.backups.restore(data)
        before = c.nodes[leader].commit_index
        with pytest.raises(BackupFormatError):
            await svc.backups.restore(data[:-3])
        # A checksummed file whose snapshot is garbage: refused before anything is proposed.
        junk = b"\x93\x01\x02\x03"
        with pytest.raises(SnapshotFormatError):
            await svc.backups.restore(file_of(BackupInfo(1, 1, "x", 0.0, len(junk)), junk))
        # Housekeeping may have appended entries meanwhile, but no restore step.
        log = c.nodes[leader].core.log
        appended = [log.entry(i) for i in range(before + 1, log.last_index() + 1)]
        assert not [e for e in appended if b"restore." in e.command]
        assert verify_backup(data)[0] == info
