"""A crash or a full disk in the middle of a streamed snapshot install never leaves a mix.

Power loss is modelled by ``CrashDisk`` (a file holds what it held at its last fsync, a
directory the names it held at its last directory fsync); here it loses power at a chosen
operation of the install, then the node's directory is reopened as after a reboot. Until the
renamed snapshot file is durable in its directory, the old snapshot and the old log come back
whole; after it, the new snapshot and a log consistent with it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from raftcache.storage.base import DiskFullError
from raftcache.storage.file import FileStorage
from tests.raft.snapshot_stream_helpers import (
    DigestMachine,
    digest,
    feed,
    requests,
    seed_storage,
    start_follower,
    temp_files,
)
from tests.storage.faultfs import CrashDisk, FaultyOps

SIZE = 4096
COUNT = 6
OLD = b"old snapshot"


class PowerLossError(Exception):
    """The machine lost power: nothing after this operation reaches the disk."""


class DyingDisk(CrashDisk):
    """A ``CrashDisk`` that loses power at the ``nth`` operation of ``kind`` on a file whose
    name contains ``name``: that operation and every later write fail with ``PowerLossError``
    (closing a file still works, so the process can let go of its descriptors)."""

    def __init__(self) -> None:
        super().__init__()
        self.trigger: tuple[str, str, int] | None = None
        self.dead = False

    def _maybe_die(self, kind: str, path: str) -> None:
        if self.dead:
            raise PowerLossError(f"{kind} {os.path.basename(path)} after the power loss")
        if self.trigger is None:
            return
        want, name, nth = self.trigger
        if kind == want and name in os.path.basename(path):
            if nth <= 1:
                self.dead = True
                raise PowerLossError(f"power lost at {kind} {os.path.basename(path)}")
            self.trigger = (want, name, nth - 1)

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        if flags & os.O_CREAT:
            self._maybe_die("create", path)
        return super().open(path, flags, mode)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        self._maybe_die("write", self.fd_paths[fd])
        return super().pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        self._maybe_die("fsync", self.fd_paths[fd])
        super().fsync(fd)

    def fsync_dir(self, path: str) -> None:
        self._maybe_die("fsync_dir", path)
        super().fsync_dir(path)

    def rename(self, src: str, dst: str) -> None:
        self._maybe_die("rename", src)
        super().rename(src, dst)

    def unlink(self, path: str) -> None:
        self._maybe_die("unlink", path)
        super().unlink(path)

    def truncate(self, fd: int, size: int) -> None:
        self._maybe_die("truncate", self.fd_paths[fd])
        super().truncate(fd, size)


# (operation, file name part, nth) at which power is lost, and whether the new snapshot
# survives. Order of an install: chunks written to snapshot.N.tmp; trailer; fsync of the temp
# file; rename over ``snapshot``; fsync of the directory; then the old log is unlinked.
# The last operation that reached the disk is checked too, so each point is where it says.
POINTS = [
    pytest.param(("write", ".tmp", 3), ("write", ".tmp"), False, id="mid-transfer"),
    pytest.param(("write", ".tmp", COUNT + 1), ("write", ".tmp"), False, id="trailer"),
    pytest.param(("fsync", ".tmp", 1), ("write", ".tmp"), False, id="temp-fsync"),
    pytest.param(("rename", ".tmp", 1), ("fsync", ".tmp"), False, id="rename"),
    pytest.param(("fsync_dir", "", 1), ("rename", "->snapshot"), False, id="dir-fsync"),
    pytest.param(("unlink", ".seg", 1), ("fsync_dir", ""), True, id="log-compaction"),
]


@pytest.mark.parametrize(("point", "last_op", "new_survives"), POINTS)
async def test_power_loss_mid_install_leaves_old_or_new_never_a_mix(
    tmp_path: Path, point: tuple[str, str, int], last_op: tuple[str, str], new_survives: bool
) -> None:
    disk = DyingDisk()
    storage = FileStorage(tmp_path, file_ops=disk)
    seed_storage(storage, snapshot=(3, OLD))
    node = await start_follower(storage, DigestMachine())
    disk.trigger = point
    try:
        with pytest.raises(PowerLossError):
            await feed(node, requests(9, COUNT, SIZE, index=50))
        if not new_survives:  # what a node still running shows: the old state, never a mix
            assert node.core.log.snapshot_index == 3
            assert node.last_applied == 3
    finally:
        await node.stop()
    assert disk.dead
    last = disk.ops[-1]
    assert (last.kind, last_op[1] in last.name) == (last_op[0], True), disk.ops[-3:]
    disk.crash()
    disk.dead, disk.trigger = False, None
    rebooted = FileStorage(tmp_path, file_ops=disk)
    recovered = rebooted.load()
    assert temp_files(tmp_path) == []
    assert recovered.snapshot is not None
    if new_survives:
        assert recovered.snapshot.last_index == 50
        assert recovered.entries == []  # the old log conflicted with it: dropped whole
        expected = digest(9, COUNT, SIZE)
    else:
        assert recovered.snapshot.last_index == 3
        assert [(e.index, e.command) for e in recovered.entries] == [
            (4, b"e4"),
            (5, b"e5"),
            (6, b"e6"),
        ]
        expected = hashlib.sha256(OLD).hexdigest()
    machine = DigestMachine()
    node = await start_follower(rebooted, machine)
    try:
        assert machine.digest == expected
        assert node.last_applied == recovered.snapshot.last_index
    finally:
        await node.stop()


async def test_disk_full_at_the_install_changes_nothing_and_a_retry_succeeds(
    tmp_path: Path,
) -> None:
    ops = FaultyOps()
    storage = FileStorage(tmp_path, file_ops=ops)
    seed_storage(storage, snapshot=(3, OLD))
    machine = DigestMachine()
    node = await start_follower(storage, machine)
    try:
        reqs = list(requests(10, COUNT, SIZE, index=60))
        await feed(node, iter(reqs[:-1]))
        ops.space_left = SIZE  # room for the last chunk, not for the trailer
        with pytest.raises(DiskFullError):
            await node.handle_install_snapshot(reqs[-1])
        # Old snapshot, old log, old core and state machine; the node keeps running.
        assert node.failure is None
        assert node.core.log.snapshot_index == 3
        assert node.core.log.last_index() == 6
        assert node.last_applied == 3
        assert machine.digest == hashlib.sha256(OLD).hexdigest()
        assert temp_files(tmp_path) == []
        loaded = storage.load_snapshot()
        assert loaded is not None
        assert loaded[0].last_index == 3
        # Space freed: the leader's resend is told to start over, and then it installs.
        ops.space_left = None
        resend = await node.handle_install_snapshot(reqs[-1])
        assert (resend.success, resend.next_offset) == (False, 0)
        await feed(node, iter(reqs))
        assert node.core.log.snapshot_index == 60
        assert machine.digest == digest(10, COUNT, SIZE)
    finally:
        await node.stop()
