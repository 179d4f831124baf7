"""The replica ledger: replicas created after bootstrap and tombstones, durable, never reused;
and a ``Store`` on files that restarts with them."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.store import Store
from raftcache.store.ledger import (
    LEDGER_FILE,
    LedgerMismatchError,
    ReplicaLedger,
    incarnation_of,
)
from tests.raft.sim import FAST


def test_ids_are_never_reused_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / LEDGER_FILE
    ledger = ReplicaLedger("s1", path)
    assert ledger.next_replica_id("g0", current=["s1"]) == "s1.1"
    ledger.tombstone("g0", "s1")
    assert ledger.next_replica_id("g0") == "s1.1"
    ledger.created("g0", "s1.1", ["s2", "s3"])
    ledger.tombstone("g0", "s1.1")
    assert ledger.record("g0") is None  # the tombstone drops the record, in one write
    again = ReplicaLedger("s1", path)
    assert again.tombstones("g0") == ["s1", "s1.1"]
    assert again.next_replica_id("g0") == "s1.2"
    assert again.next_replica_id("g1") == "s1.1"
    with pytest.raises(ValueError, match="never reused"):
        again.created("g0", "s1.1", ["s2"])
    with pytest.raises(ValueError, match="not this store's"):
        again.tombstone("g0", "s2.1")
    assert json.loads(path.read_text())["format"] == 1
    assert (incarnation_of("s1"), incarnation_of("s1.7")) == (0, 7)


def test_a_damaged_ledger_is_refused(tmp_path: Path) -> None:
    (tmp_path / LEDGER_FILE).write_text('{"format": 1, "replicas": 3}')
    with pytest.raises(ValueError, match="damaged"):
        ReplicaLedger("s1", tmp_path / LEDGER_FILE)


def _store(root: Path, hub: InMemoryHub) -> Store:
    return Store(
        "s1",
        InMemoryNetwork("s1", hub=hub, seed=1),
        groups=2,
        placement={"g0": ["s1", "s2", "s3"], "g1": ["s2", "s3", "s4"]},
        data_dir=root,
        config=FAST,
        clock=time.time,
    )


async def test_a_store_on_files_restarts_with_its_moves(tmp_path: Path) -> None:
    hub = InMemoryHub()
    store = _store(tmp_path, hub)
    assert sorted(store.replicas) == ["g0"]
    await store.start()
    created = await store.add_replica("g1", ["s2", "s3", "s4"])
    assert created.node.node_id == "s1.1"
    assert store.placement["g1"][-1] == "s1"
    assert "g1" not in store.remote
    assert await store.remove_replica("g0") == "s1"
    assert not (tmp_path / "groups" / "g0").exists()  # deleted after the tombstone
    assert "g0" in store.remote
    await store.stop()

    again = _store(tmp_path, hub)  # hosts what the ledger says, not the bootstrap placement
    assert sorted(again.replicas) == ["g1"]
    assert again.replicas["g1"].node.node_id == "s1.1"
    assert "g0" in again.remote
    with pytest.raises(ValueError, match="already holds"):
        await again.add_replica("g1", ["s2"])
    assert (await again.add_replica("g0", ["s2", "s3"])).node.node_id == "s1.1"
    await again.stop(force=True)


async def test_a_removal_cut_short_by_a_crash_is_finished_at_start(tmp_path: Path) -> None:
    hub = InMemoryHub()
    store = _store(tmp_path, hub)
    await store.start()
    await store.stop()
    # A crash after the tombstone was written, before the directory was deleted.
    ReplicaLedger("s1", tmp_path / LEDGER_FILE).tombstone("g0", "s1")
    assert (tmp_path / "groups" / "g0").exists()
    again = _store(tmp_path, hub)
    assert "g0" not in again.replicas
    assert not (tmp_path / "groups" / "g0").exists()


async def test_a_later_replica_is_reached_at_its_stores_address(tmp_path: Path) -> None:
    from raftcache.store import RemoteGroup

    hub = InMemoryHub()
    store = Store(
        "s1",
        InMemoryNetwork("s1", hub=hub, seed=1),
        groups=1,
        placement={"g0": ["s1", "s2"]},
        data_dir=tmp_path,
        config=FAST,
        clock=time.time,
        peer_addresses={"s1": "http://a:1", "s2": "http://b:2"},
    )
    node = store.replicas["g0"].node
    assert node.peer_url("s2.3") == "http://b:2"  # replica s2.3 lives on store s2
    assert node.peer_url("s9.1") is None
    remote = RemoteGroup("s5", "g0", ("s1", "s2"))
    remote.moved("s2.3")  # a leader hint naming a replica id points at its store
    assert remote.leader_id == "s2"


async def test_the_fronts_hear_of_every_change(tmp_path: Path) -> None:
    hub = InMemoryHub()
    store = _store(tmp_path, hub)
    heard: list[str] = []
    store.on_change(heard.append)
    await store.start()
    try:
        await store.add_replica("g1", ["s2", "s3", "s4"])
        store.set_placement("g0", ["s2", "s3", "s4"])  # its own replica stays listed
        assert store.placement["g0"] == ("s2", "s3", "s4", "s1")
        await store.remove_replica("g0")
        store.set_placement("g0", ["s2", "s3", "s4"])
        assert store.remote["g0"].members == ("s2", "s3", "s4")
        store.set_placement("g0", ["s4", "s3", "s2"])
        with pytest.raises(ValueError, match="at least one store"):
            store.set_placement("g0", ["s1"])
        assert heard == ["g1", "g0", "g0", "g0"]
    finally:
        await store.stop()


async def test_a_removal_racing_a_creation_never_touches_the_new_replica(tmp_path: Path) -> None:
    """Review finding: a removal stopping its replica while a creation of the group's next
    incarnation ran deleted the new replica's directory. Changes of one group now run one at
    a time, and each incarnation has its own directory."""
    hub = InMemoryHub()
    store = _store(tmp_path, hub)
    await store.start()
    try:
        removing = asyncio.create_task(store.remove_replica("g0", "s1"))
        await asyncio.sleep(0)  # the removal holds the group's lock, stopping its replica
        created = await store.add_replica("g0", ["s2", "s3"])
        assert await removing == "s1"
        assert created.node.node_id == "s1.1"
        assert (tmp_path / "groups" / "g0-s1.1").is_dir()
        assert not (tmp_path / "groups" / "g0").exists()
        assert store.replicas["g0"] is created
        with pytest.raises(ValueError, match="not s1"):  # a stale request: another incarnation
            await store.remove_replica("g0", "s1")
    finally:
        await store.stop()


async def test_a_new_replica_never_believes_itself_a_voter(tmp_path: Path) -> None:
    """Review finding: voters naming this store's own next replica made it elect itself."""
    store = _store(tmp_path, InMemoryHub())
    with pytest.raises(ValueError, match="none of them this store's"):
        await store.add_replica("g1", ["s1.1"])
    with pytest.raises(ValueError, match="none of them this store's"):
        await store.add_replica("g1", [])
    assert "g1" not in store.replicas
    assert store.ledger.record("g1") is None


def test_a_directory_the_ledger_does_not_know_stops_the_start(tmp_path: Path) -> None:
    """Review finding: a lost or rolled-back ledger made the store delete replicas' data."""
    hub = InMemoryHub()
    (tmp_path / "groups" / "g1-s1.4").mkdir(parents=True)
    with pytest.raises(LedgerMismatchError, match=r"g1-s1\.4"):
        _store(tmp_path, hub)
    assert (tmp_path / "groups" / "g1-s1.4").is_dir()  # nothing deleted
    ReplicaLedger("s1", tmp_path / LEDGER_FILE).tombstone("g1", "s1.4")
    _store(tmp_path, hub)  # a tombstoned replica's directory: a removal to finish
    assert not (tmp_path / "groups" / "g1-s1.4").exists()


def test_every_store_keeps_the_order_it_is_told(tmp_path: Path) -> None:
    """Review finding: each store moved itself last, so stores disagreed on the preferred
    leader (the first) and their balancers handed leadership back and forth."""
    hub = InMemoryHub()
    store = _store(tmp_path, hub)  # hosts g0
    store.set_placement("g0", ["s3", "s1", "s2"])
    assert store.placement["g0"] == ("s3", "s1", "s2")
    store.set_placement("g1", ["s4", "s2", "s3"])
    assert store.placement["g1"] == ("s4", "s2", "s3")


async def test_the_balancer_follows_replicas_that_come_and_go(tmp_path: Path) -> None:
    """Review finding: the balancer kept the groups it was built with and raised KeyError
    on every check once one of them left the store."""
    from raftcache.store.balance import PreferredLeaders

    hub = InMemoryHub()
    store = _store(tmp_path, hub)
    balancer = PreferredLeaders(store, clock=time.monotonic)
    await store.start()
    try:
        assert balancer.due() == []
        await store.remove_replica("g0")
        assert balancer.due() == []  # no KeyError
        await store.add_replica("g1", ["s2", "s3", "s4"])
        assert balancer.due() == []
    finally:
        await store.stop()


async def test_a_replica_added_while_the_store_stops_declines_transfers_too(
    tmp_path: Path,
) -> None:
    """A store about to stop declines to become a transfer target in every group it hosts —
    including a replica created after its stop began (a move's ``add_replica`` arriving during
    the hand-over or the drain), which would otherwise be handed a leadership it drops at
    once. A later run of the same store object starts over."""
    store = _store(tmp_path, InMemoryHub())
    await store.start()
    store.prepare_to_stop()
    assert store.replicas["g0"].node.core.leaving
    created = await store.add_replica("g1", ["s2", "s3", "s4"])
    assert created.node.core.leaving
    await store.stop()
    await store.start()
    assert not any(r.node.core.leaving for r in store.all_replicas())
    await store.stop()
