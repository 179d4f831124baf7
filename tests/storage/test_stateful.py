"""Hypothesis: FileStorage on a power-losing disk behaves exactly like MemoryStorage.

Random appends (with overwrites), hard-state changes, syncs, snapshots (matching, conflicting
and beyond the log), clean restarts and power losses. After every power loss both storages must
recover the same state; ``CrashDisk`` keeps only what FileStorage fsynced, so a missing fsync
(or one in the wrong order) shows up as a divergence from the model. A torn power loss keeps a
random prefix of unsynced appends, or any subset of their 4 KiB pages (out-of-order write-back):
recovery must then return the synced log plus a prefix of the unsynced entries — refusing to
start (a torn non-last segment, a torn tail taken for corruption) fails here.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from raftcache.raft.messages import LogEntry
from raftcache.storage import FileStorage, MemoryStorage

from .faultfs import CrashDisk, RandomPages
from .helpers import meta, rows

SEGMENT_SIZE = 200


class FileVersusMemory(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # tmpfs when there is one: the disk is simulated anyway, and metadata operations on a
        # real file system cost milliseconds each.
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.dir = tempfile.mkdtemp(prefix="raftcache-stateful-", dir=shm)
        self.disk = CrashDisk()
        self.file = self._open()
        self.mem = MemoryStorage()
        self.file.load()
        self.mem.load()
        self.term = 1
        self.terms: dict[int, int] = {}  # index -> term in the (written) model log

    def _open(self) -> FileStorage:
        return FileStorage(self.dir, segment_size=SEGMENT_SIZE, file_ops=self.disk)

    @rule(
        data=st.data(),
        count=st.integers(1, 4),
        size=st.integers(0, 70),
        new_term=st.booleans(),
    )
    def append(self, data: st.DataObject, count: int, size: int, new_term: bool) -> None:
        first = data.draw(st.integers(self.mem.snapshot_index + 1, self.mem.last_index + 1))
        self.term += new_term
        batch = [
            LogEntry(self.term, i, bytes([i % 251]) * size, i % 3)
            for i in range(first, first + count)
        ]
        self.mem.append(batch)
        self.file.append(batch)

    @rule(term=st.integers(0, 50), vote=st.sampled_from([None, "n1", "n2"]))
    def set_hard_state(self, term: int, vote: str | None) -> None:
        self.mem.set_hard_state(term, vote)
        self.file.set_hard_state(term, vote)

    @rule()
    def sync(self) -> None:
        self.mem.sync()
        self.file.sync()

    @rule(data=st.data(), matching=st.booleans(), blob=st.binary(max_size=64))
    def save_snapshot(self, data: st.DataObject, matching: bool, blob: bytes) -> None:
        index = data.draw(st.integers(self.mem.snapshot_index, self.mem.last_index + 3))
        term = self.term + 1  # matches no entry: the whole log must go
        if matching:
            current = self.mem.current()
            by_index = {e.index: e.term for e in current.entries}
            if current.snapshot is not None:
                by_index[current.snapshot.last_index] = current.snapshot.last_term
            term = by_index.get(index, term)
        m = meta(index, term)
        self.mem.save_snapshot(m, blob)
        self.file.save_snapshot(m, blob)

    @rule()
    def power_loss(self) -> None:
        self.file.close()
        self.disk.crash()
        self.file = self._open()
        self.mem.crash()
        self._compare_recovered()

    @rule(seed=st.integers(0, 2**32 - 1), pages=st.booleans())
    def torn_power_loss(self, seed: int, pages: bool) -> None:
        """Power loss tearing unsynced appends: the file may keep a prefix of them, or (pages)
        any subset of their pages."""
        written, durable = self.mem.current().entries, self.mem.durable().entries
        self.file.close()
        if pages:
            self.disk.crash(pages=RandomPages(random.Random(seed)))
        else:
            self.disk.crash(torn=random.Random(seed))
        self.file = self._open()
        self.mem.crash()
        recovered = self.file.load().entries
        assert rows(recovered[: len(durable)]) == rows(durable)  # nothing synced is lost
        assert rows(recovered) == rows(written[: len(recovered)])  # nothing invented
        if len(recovered) > len(durable):  # the model adopts the surviving torn prefix
            self.mem.append(recovered[len(durable) :])
            self.mem.sync()
        self._compare_recovered()

    @rule()
    def clean_restart(self) -> None:
        self.sync()
        self.file.close()
        self.file = self._open()
        self._compare_recovered()

    @precondition(lambda self: self.mem.last_index > self.mem.snapshot_index)
    @invariant()
    def same_shape(self) -> None:
        assert self.file.last_index == self.mem.last_index
        assert self.file.snapshot_index == self.mem.snapshot_index

    def _compare_recovered(self) -> None:
        f, m = self.file.load(), self.mem.load()
        assert (f.term, f.voted_for, f.snapshot) == (m.term, m.voted_for, m.snapshot)
        assert rows(f.entries) == rows(m.entries)
        assert self.file.load_snapshot() == self.mem.load_snapshot()

    def teardown(self) -> None:
        self.file.close()
        shutil.rmtree(self.dir, ignore_errors=True)


FileVersusMemory.TestCase.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None
)
TestFileVersusMemory = FileVersusMemory.TestCase
