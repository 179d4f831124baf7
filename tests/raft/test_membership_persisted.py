"""Membership comes from the data, not from the command line (issue 12, hole 4).

A node restarted with a wrong peer list (a typo, a stale config file) used to take its voters
from that list whenever its log held no configuration entry and no snapshot: restarted with only
itself, it elected itself during a partition and committed entries of its own — two leaders,
different entries at the same index and term. The first start now records its voters; later
starts read them back, warn about a stale list and refuse one that names a membership the node
never had.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from raftcache.raft.core import Role
from raftcache.raft.errors import PeersMismatchError
from raftcache.storage.base import StorageCorruptError
from raftcache.storage.file import FileStorage
from raftcache.storage.memory import MemoryStorage
from tests.raft.sim import SimCluster


@pytest.mark.looptime
async def test_restart_with_only_itself_as_peer_cannot_elect_itself_in_a_partition() -> None:
    """The audit's reproduction: n3, cut off, restarted with ``--peers n3``."""
    c = SimCluster(3, seed=7)
    await c.start()
    try:
        await c.propose(b"before")
        await c.wait_applied(2)
        leader = await c.wait_leader()
        victim = next(i for i in c.ids if i != leader.node_id)
        await c.crash(victim)
        c.hub.isolate(victim)
        started, refusal = True, ""
        try:
            await c.restart(victim, peers=[victim])
        except PeersMismatchError as exc:
            started, refusal = False, str(exc)
        if started:
            # Whatever happens, it must not lead a cluster of its own.
            await asyncio.sleep(3.0)
            assert c.nodes[victim].role is not Role.LEADER
            assert c.nodes[victim].members == sorted(c.ids)
        # The majority side goes on committing.
        c.hub.rejoin(victim)
        await c.propose(b"after")
        c.check_applied_prefixes()
        assert not started, "a peer list naming a membership the data never had must refuse"
        assert "missing from --peers" in refusal
    finally:
        await c.stop()


@pytest.mark.looptime
async def test_a_misspelled_peer_is_refused_with_the_difference_named() -> None:
    c = SimCluster(3, seed=8)
    await c.start()
    try:
        await c.propose(b"x")
        await c.crash("n2")
        with pytest.raises(PeersMismatchError) as info:
            await c.restart("n2", peers=["n1", "n2", "m3"])
        text = str(info.value)
        assert "not members: m3" in text
        assert "missing from --peers: n3" in text
        # The refusal left the data untouched: the right list starts it.
        node = await c.restart("n2")
        assert node.members == ["n1", "n2", "n3"]
        await c.propose(b"y")
        c.check_applied_prefixes()
    finally:
        await c.stop()


@pytest.mark.looptime
async def test_a_stale_peer_list_is_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bootstrapped as n1..n3, grown to n4 by a membership change: restarting n1 with the
    bootstrap list (a config file nobody updated) keeps the four members."""
    c = SimCluster(3, seed=9)
    await c.start()
    try:
        follower = await _grow_to_four_and_stop_a_founder(c)
        with caplog.at_level(logging.WARNING, logger="raftcache.raft"):
            node = await c.restart(follower, peers=["n1", "n2", "n3"])
        assert node.members == ["n1", "n2", "n3", "n4"]
        assert any("ignoring peers" in r.getMessage() for r in caplog.records)
        await c.propose(b"still four")
        c.check_applied_prefixes()
    finally:
        await c.stop()


@pytest.mark.looptime
async def test_the_first_start_records_its_voters_before_anything_else() -> None:
    storage = MemoryStorage()
    c = SimCluster(3, seed=10)
    c.storages["n1"] = storage
    await c.start()
    try:
        assert storage.record_bootstrap(["ignored"]) == ("n1", "n2", "n3")
    finally:
        await c.stop()


def test_file_storage_keeps_the_bootstrap_across_reopen(tmp_path: object) -> None:
    path = f"{tmp_path}/d"
    with FileStorage(path, fsync=False) as s:
        assert s.record_bootstrap(["n3", "n1", "n2"]) == ("n1", "n2", "n3")
    with FileStorage(path, fsync=False) as s:
        assert s.record_bootstrap(["n9"]) == ("n1", "n2", "n3")
    with open(f"{path}/BOOTSTRAP", "wb") as f:
        f.write(b"{not json")
    with FileStorage(path, fsync=False) as s, pytest.raises(StorageCorruptError, match="BOOTSTRAP"):
        s.record_bootstrap(["n1"])


@pytest.mark.looptime
async def test_data_from_an_older_release_records_its_own_membership() -> None:
    """A data directory written before BOOTSTRAP existed, whose log holds a membership change:
    its first start on this release records the data's membership, not the flags' (a wrong
    --peers at that moment must not become the node's recorded bootstrap)."""
    c = SimCluster(3, seed=11)
    await c.start()
    try:
        follower = await _grow_to_four_and_stop_a_founder(c)
        c.storages[follower]._bootstrap = None  # as an older release left the directory
        with pytest.raises(PeersMismatchError):
            await c.restart(follower, peers=[follower])
        assert c.storages[follower].record_bootstrap([]) == ("n1", "n2", "n3", "n4")
        node = await c.restart(follower)
        assert node.members == ["n1", "n2", "n3", "n4"]
    finally:
        await c.stop()


async def _grow_to_four_and_stop_a_founder(c: SimCluster) -> str:
    """Add n4 by a membership change, then stop one of the three founding followers; its id."""
    await c.propose(b"first")  # the leader has committed in its term: it may add members
    leader = await c.wait_leader()
    c.ids.append("n4")
    c.storages["n4"] = MemoryStorage()
    await c.restart("n4", peers=["n1", "n2", "n3", "n4"])
    await leader.add_member("n4")
    await c.propose(b"four members")
    follower = next(i for i in ("n1", "n2", "n3") if i != leader.node_id)
    await c.crash(follower)
    return follower
