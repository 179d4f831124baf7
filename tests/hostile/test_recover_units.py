"""``raftcache recover`` on data written through FileStorage: the plan, what it writes, what it
refuses, and a RaftNode restarted on the result becoming the leader of a one-node cluster with
every entry of its log applied."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from raftcache.cli.main import main
from raftcache.cli.recover import RecoverError, recover_data_dir
from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.raft.config import RaftConfig
from raftcache.raft.configuration import Configuration
from raftcache.raft.messages import EntryKind, LogEntry
from raftcache.raft.node import RaftNode
from raftcache.storage.file import FileStorage

URLS = {"n1": "http://10.0.0.1:8001", "n2": "http://10.0.0.2:8001", "n3": "http://10.0.0.3:8001"}


class Recorder:
    """A state machine that remembers what it applied."""

    def __init__(self) -> None:
        self.applied: list[bytes] = []

    def apply(self, command: bytes) -> Any:
        self.applied.append(command)
        return len(self.applied)

    def snapshot(self) -> bytes:
        return b"\n".join(self.applied)

    def restore(self, data: bytes) -> None:
        self.applied = data.split(b"\n") if data else []


def survivor(path: Path, *, commands: int = 5, config: bool = True) -> Path:
    """The data of n1 of a dead 3-node cluster: its configuration and some commands; its
    term (7) is above its last entry's (3), as after elections it could not win."""
    storage = FileStorage(path)
    storage.bind("n1")
    entries = [LogEntry(1, 1, b"", EntryKind.NOOP)]
    if config:
        entries.append(LogEntry(1, 2, Configuration(voters=dict(URLS)).encode(), EntryKind.CONFIG))
    for i in range(commands):
        entries.append(LogEntry(3, len(entries) + 1, f"cmd-{i}".encode()))
    storage.append(entries)
    storage.set_hard_state(7, "n2")
    storage.sync()
    storage.close()
    return path


def read_back(path: Path) -> tuple[int, list[LogEntry]]:
    storage = FileStorage(path)
    try:
        state = storage.load()
        return state.term, state.entries
    finally:
        storage.close()


def test_recovery_appends_one_configuration_with_a_higher_term(tmp_path: Path) -> None:
    data = survivor(tmp_path / "n1")
    plan = recover_data_dir(data, dry_run=True)
    assert (plan.node_id, plan.url, plan.index, plan.term) == ("n1", URLS["n1"], 8, 8)
    assert plan.old_voters == ["n1", "n2", "n3"]
    assert read_back(data)[1][-1].index == 7  # a dry run writes nothing

    assert recover_data_dir(data) == plan
    term, entries = read_back(data)
    assert term == 8
    assert [e.index for e in entries] == list(range(1, 9))
    last = entries[-1]
    assert (last.term, last.kind) == (8, EntryKind.CONFIG)
    assert Configuration.decode(last.command) == Configuration(voters={"n1": URLS["n1"]})


async def test_a_recovered_node_leads_alone_and_applies_its_whole_log(tmp_path: Path) -> None:
    data = survivor(tmp_path / "n1", commands=20)
    recover_data_dir(data)
    machine = Recorder()
    config = RaftConfig(
        election_timeout_min=0.1,
        election_timeout_max=0.2,
        heartbeat_interval=0.02,
        tick_interval=0.01,
        persist_in_thread=False,
    )
    # The operator passes the old, stale peer list: the persisted configuration wins.
    node = RaftNode(
        "n1",
        ["n1", "n2", "n3"],
        InMemoryNetwork("n1", hub=InMemoryHub()),
        FileStorage(data),
        machine,
        config,
    )
    await node.start()
    try:
        async with asyncio.timeout(10):
            while node.role.value != "leader":
                await asyncio.sleep(0.01)
        assert await node.propose(b"after", timeout=10) == 21
        assert node.role.value == "leader"
        assert node.members == ["n1"]
        assert machine.applied == [f"cmd-{i}".encode() for i in range(20)] + [b"after"]
    finally:
        await node.stop()


def test_refusals(tmp_path: Path) -> None:
    data = survivor(tmp_path / "n1")
    with pytest.raises(RecoverError, match="belongs to node n1") as wrong_id:
        recover_data_dir(data, node_id="n2")
    assert wrong_id.value.code == 2
    held = FileStorage(data)  # a running node holds the lock
    try:
        with pytest.raises(RecoverError, match="stop the node") as locked:
            recover_data_dir(data)
        assert locked.value.code == 1
    finally:
        held.close()
    with pytest.raises(RecoverError, match="not a raftcache data directory"):
        recover_data_dir(tmp_path / "nowhere")
    empty = FileStorage(tmp_path / "empty")
    empty.bind("n9")
    empty.close()
    with pytest.raises(RecoverError, match="nothing to recover"):
        recover_data_dir(tmp_path / "empty")
    bootstrapped = survivor(tmp_path / "bootstrapped", config=False)
    with pytest.raises(RecoverError, match="pass --url"):
        recover_data_dir(bootstrapped)
    assert recover_data_dir(bootstrapped, url="http://10.9.9.9:1/").url == "http://10.9.9.9:1"


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(survivor(tmp_path / "n1"))
    assert main(["recover", "--data-dir", data]) == 2
    assert "--force-new-cluster" in capsys.readouterr().err
    assert main(["recover", "--data-dir", data, "--force-new-cluster", "--url", "ftp://x"]) == 2
    capsys.readouterr()
    assert main(["recover", "--data-dir", data, "--force-new-cluster", "--dry-run"]) == 0
    assert "plan for n1" in capsys.readouterr().out
    assert read_back(Path(data))[0] == 7
    assert main(["recover", "--data-dir", data, "--force-new-cluster"]) == 0
    out = capsys.readouterr().out
    assert "recovered n1" in out
    assert "/v1/members" in out
    assert read_back(Path(data))[0] == 8
