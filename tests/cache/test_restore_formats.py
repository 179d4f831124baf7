"""A restore needs the command version of what the backup holds, on every node.

The hostile review's finding: RESTORE.* were format 2 whatever the backup held, so during a
rolling upgrade a backup with hashes restored onto a build without them loaded each hash as a
string (its msgpack bytes) while the newer builds refused: replicas diverged. Now the leader
raises the cluster to the backup's content version first, and the commit's entry carries it,
so a build below it fails stop instead of applying it.
"""

from __future__ import annotations

import asyncio
import io

import msgpack  # type: ignore[import-untyped, unused-ignore]
import pytest

from raftcache.cache.backup import encode_backup
from raftcache.cache.backup_service import content_version
from raftcache.cache.commands import encode, encode_batch, encode_format, encode_set
from raftcache.cache.formats import (
    CommandVersionNotEnabledError,
    UnsupportedCommandVersionError,
)
from raftcache.cache.hashes import HASH_VERSION, HashOp
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.restore_commands import RestoreCommit
from raftcache.cache.snapshot import read_snapshot
from tests.cache.cluster import CacheCluster
from tests.cache.helpers import Log
from tests.cache.test_restore import begin


def machine_with(hashes: bool) -> CacheStateMachine:
    log = Log(CacheStateMachine())
    log.apply(encode_format(HASH_VERSION, now=0.0))
    log.apply(encode_set("s", b"text", now=0.0))
    if hashes:
        log.apply(encode_batch([HashOp("h", "set", (b"f",), (b"v",))], now=0.0))
    return log.machine


def test_the_content_version_of_a_backup() -> None:
    assert content_version(read_snapshot(io.BytesIO(machine_with(False).snapshot()))) == 2
    assert content_version(read_snapshot(io.BytesIO(machine_with(True).snapshot()))) == 5


def test_a_commit_of_hashes_is_fail_stop_on_a_build_without_them() -> None:
    entry = encode(RestoreCommit(10.0, 7, needs=HASH_VERSION))
    assert msgpack.unpackb(entry)["f"] == HASH_VERSION
    old = Log(CacheStateMachine(max_command_version=4))
    old.apply(encode_format(4, now=0.0))
    snapshot = machine_with(True).snapshot()
    old.apply(begin(snapshot))
    with pytest.raises(UnsupportedCommandVersionError):
        old.machine.apply_entry(old.index + 1, entry)
    assert old.machine.get("h", 10.0) is None  # nothing loaded, as a string or otherwise
    # An ordinary restore commit is still format 2, as every release wrote it.
    assert msgpack.unpackb(encode(RestoreCommit(10.0, 7))).get("f") == 2


@pytest.mark.looptime
async def test_a_backup_with_hashes_is_refused_while_a_node_cannot_read_them() -> None:
    data = {}
    async with CacheCluster(3) as source:
        svc = source.services[await source.leader()]
        await svc.ensure_format(HASH_VERSION)
        await svc.set("s", b"text")
        await svc.batch([HashOp("h", "set", (b"f",), (b"v",))])
        info, snapshot = await svc.backups.capture()
        data["backup"] = b"".join(encode_backup(info, snapshot))
    cluster = CacheCluster(3)
    cluster.caps["n3"] = 4  # n3 runs a release with scripts but without hashes
    async with cluster as c:
        leader = await c.leader()
        if leader == "n3":
            leader = await c.nodes["n3"].transfer_leadership("n1")
        svc = c.services[leader]
        await svc.set("kept", b"1")
        with pytest.raises(CommandVersionNotEnabledError):
            await svc.backups.restore(data["backup"])
        await asyncio.sleep(1.0)
        await c.settle()
        for machine in c.machines.values():  # nothing of the backup anywhere
            assert machine.get("h", c.clock()) is None
            assert machine.get("kept", c.clock()) is not None
