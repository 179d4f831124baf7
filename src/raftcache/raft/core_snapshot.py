"""Snapshots in the core: compaction, and installing a leader's snapshot (§7).

Rule: a snapshot replaces only what it covers — entries after it survive when the log agrees
with it at its index, otherwise the whole log goes; its configuration becomes the base of the
configuration history; the commit index only grows. Nothing here touches the disk: a received
snapshot is handed to the driver through ``Ready.snapshot`` (in-memory assembly) or installed by
the driver itself first (streaming, ``snapshot_installed``).
"""

from __future__ import annotations

from raftcache.protocol.configuration import Configuration
from raftcache.protocol.messages import (
    InstallSnapshotRequest,
    InstallSnapshotResponse,
)
from raftcache.raft.core_state import CoreState
from raftcache.storage.base import SnapshotData, SnapshotMeta


class SnapshotMixin(CoreState):
    def handle_install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
        if req.term < self.term:
            return InstallSnapshotResponse(self.term, False, 0)
        self._accept_leader(req.term, req.leader_id)
        key = (req.last_included_index, req.last_included_term)
        if req.offset == 0:
            self._incoming = (key[0], key[1], bytearray())
        inc = self._incoming
        if inc is None or (inc[0], inc[1]) != key or req.offset != len(inc[2]):
            expected = len(inc[2]) if inc is not None and (inc[0], inc[1]) == key else 0
            return InstallSnapshotResponse(self.term, False, expected)
        inc[2].extend(req.data)
        if not req.done:
            return InstallSnapshotResponse(self.term, True, len(inc[2]))
        self._incoming = None
        self._install_snapshot(req, bytes(inc[2]))
        return InstallSnapshotResponse(self.term, True, req.offset + len(req.data))

    def _install_snapshot(self, req: InstallSnapshotRequest, data: bytes) -> None:
        index, term = req.last_included_index, req.last_included_term
        if index <= self.commit_index:
            return  # we already have (and may have applied) everything it covers
        # An empty configuration (a minimal peer) keeps the one in force here.
        conf = Configuration.decode(req.configuration) if req.configuration else self.configuration
        meta = SnapshotMeta(index, term, conf)
        self._adopt_snapshot(meta, data)
        self._snapshot_to_install = (meta, data)

    def accept_snapshot_sender(self, req: InstallSnapshotRequest) -> bool:
        """A chunk the driver streams to disk itself arrived: follow its sender unless its
        term is stale (False). The driver then calls ``snapshot_installed`` once installed."""
        if req.term < self.term:
            return False
        self._accept_leader(req.term, req.leader_id)
        return True

    def snapshot_installed(self, meta: SnapshotMeta, data: SnapshotData) -> None:
        """The driver installed a streamed snapshot on disk: adopt it, nothing left to persist.
        The commit index only grows (entries may have arrived during the install)."""
        if meta.last_index > self.log.snapshot_index:
            self._adopt_snapshot(meta, data)

    def _adopt_snapshot(self, meta: SnapshotMeta, data: SnapshotData) -> None:
        index, term = meta.last_index, meta.last_term
        keeps_suffix = self.log.term_at(index) == term
        self.log.compact(index, term)
        # Configurations from entries after the snapshot survive only if those entries do: a
        # conflicting log is discarded whole, and a stale, never-committed CONFIG entry in it
        # must not stay in force.
        after = [(i, c) for i, c in self._configs if i > index] if keeps_suffix else []
        self._configs = [(index, meta.configuration), *after]
        self.commit_index = max(self.commit_index, index)
        self.applied = index
        self.snapshot_data = data

    def snapshot_taken(self, meta: SnapshotMeta, data: SnapshotData) -> None:
        """The driver persisted a snapshot of the applied state: compact the log."""
        if meta.last_index <= self.log.snapshot_index:
            return
        self.log.compact(meta.last_index, meta.last_term)
        self.snapshot_data = data
        keep = [(i, c) for i, c in self._configs if i > meta.last_index]
        self._configs = [(meta.last_index, meta.configuration), *keep]
