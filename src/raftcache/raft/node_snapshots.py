"""Snapshots in the driver: taking them (automatic or asked), and receiving a leader's.

Rule: a snapshot is labelled with exactly the entries the state machine applied; it is on disk
before the core compacts its log. A streamed snapshot from a leader is written chunk by chunk,
and installed only by the ready loop between two Readies, on disk first, then adopted by the
core and the state machine; a full disk leaves the old snapshot, the log and the core untouched.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from raftcache.protocol.messages import (
    InstallSnapshotRequest,
    InstallSnapshotResponse,
)
from raftcache.raft.core import RaftCore
from raftcache.raft.errors import NodeStoppedError
from raftcache.raft.node_base import NodeBase
from raftcache.raft.snapshot_transfer import Incoming
from raftcache.storage.base import DiskFullError, SnapshotData, SnapshotMeta
from raftcache.sysmem import release_free_memory

log = logging.getLogger("raftcache.raft")

#: A snapshot that compacted at least this many command bytes returns free memory to the OS.
RELEASE_AFTER_BYTES = 8 * 1024 * 1024


class SnapshotsMixin(NodeBase):
    def _maybe_auto_snapshot(self) -> None:
        threshold = self.config.snapshot_threshold
        threshold_bytes = self.config.snapshot_threshold_bytes
        core = self._core
        if core is None or self._snapshotting or self._disk_full:
            return
        if (threshold > 0 and self._applied - core.log.snapshot_index >= threshold) or (
            threshold_bytes > 0 and self._applied_bytes - self._snapshot_mark >= threshold_bytes
        ):
            self._snapshotting = True
            task = asyncio.create_task(self._snapshot_task())
            self._rpc_tasks.add(task)
            task.add_done_callback(self._rpc_tasks.discard)

    async def _snapshot_task(self) -> None:
        try:
            await self.take_snapshot()
        except Exception as exc:
            log.warning("automatic snapshot failed on %s: %r", self.node_id, exc)

    async def take_snapshot(self) -> int:
        """Snapshot the applied state and compact the log; returns the snapshot's index."""
        core = self._check_running()
        self._snapshotting = True
        try:
            # The state machine's own applied index, not the core's: the core hands entries
            # out before the driver applies them (after the disk write), and a snapshot must
            # be labelled with exactly the entries its data contains.
            index = self._applied
            mark = self._applied_bytes  # the command bytes up to ``index``
            if index <= core.log.snapshot_index:
                return core.log.snapshot_index
            term = core.log.term_at(index)
            assert term is not None
            meta = SnapshotMeta(index, term, core.config_for_snapshot(index))
            if self._snapshots.streaming:
                taken = await self._take_streamed_snapshot(core, meta)
                if taken >= index:
                    self._compacted(mark)
                return taken
            prepare = getattr(self.state_machine, "prepare_snapshot", None)
            if prepare is not None:
                data = await asyncio.to_thread(prepare())
            else:
                data = self.state_machine.snapshot()
            if not self._running or meta.last_index <= core.log.snapshot_index:
                return core.log.snapshot_index
            await self._snapshots.storage_io(self.storage.save_snapshot, meta, data)
            if meta.last_index <= core.log.snapshot_index:
                return core.log.snapshot_index
            core.snapshot_taken(meta, data)
            self._compacted(mark)
            self._wake.set()
            return index
        finally:
            self._snapshotting = False

    async def _release_memory(self) -> None:
        await asyncio.to_thread(release_free_memory)

    def _compacted(self, mark: int) -> None:
        """The log up to the snapshot is gone: when that freed much, give the memory back
        (``raftcache.sysmem``; in a worker thread, off the event loop)."""
        freed, self._snapshot_mark = mark - self._snapshot_mark, mark
        if freed >= RELEASE_AFTER_BYTES:
            task = asyncio.create_task(self._release_memory())
            self._rpc_tasks.add(task)
            task.add_done_callback(self._rpc_tasks.discard)

    async def _take_streamed_snapshot(self, core: RaftCore, meta: SnapshotMeta) -> int:
        """Encode the state machine straight into the storage's snapshot file; the core then
        sends from that file, so no copy of the snapshot stays in memory."""

        def wanted() -> bool:
            return self._running and meta.last_index > core.log.snapshot_index

        view = await self._snapshots.save_local(meta, wanted)
        if view is not None:
            core.snapshot_taken(meta, view)  # ignored if a newer snapshot came meanwhile
            self._snapshots.keep_only(core.snapshot_data)
            self._wake.set()
        return core.log.snapshot_index

    def _restore_stored_snapshot(self) -> tuple[SnapshotData | None, int]:
        """Restore the state machine from the stored snapshot (at start); return what the core
        sends from — a view reading the file chunk by chunk when the storage streams — and
        the snapshot's index."""
        if not self._snapshots.streaming:
            snapshot = self.storage.load_snapshot()
            if snapshot is None:
                return None, 0
            self.state_machine.restore(snapshot[1])
            return snapshot[1], snapshot[0].last_index
        view = self._snapshots.open_stored()
        if view is None:
            return None, 0
        try:
            self._snapshots.restore(view)
        except BaseException:
            self._snapshots.close()
            raise
        return view, view.meta.last_index

    async def _receive_chunk(
        self, core: RaftCore, req: InstallSnapshotRequest
    ) -> InstallSnapshotResponse:
        """Write one chunk to disk; after the last one, have the ready loop install it."""
        if not self._running or not core.accept_snapshot_sender(req):
            return InstallSnapshotResponse(core.term, False, 0)
        if req.last_included_index <= core.commit_index:
            # We hold everything it covers: acknowledge without storing anything (the leader
            # moves on once it sees the last chunk acknowledged).
            receiving = self._snapshots.receiving
            if receiving is not None and receiving.last_index <= core.commit_index:
                self._snapshots.abort_incoming()
            return InstallSnapshotResponse(core.term, True, req.offset + len(req.data))
        got = await self._snapshots.receive(req, core.configuration)
        if got.complete is not None and not await self._install_in_loop(got.complete):
            # Covered meanwhile by entries from a newer leader: acknowledged all the same.
            log.info("%s: snapshot %d no longer needed", self.node_id, req.last_included_index)
        return InstallSnapshotResponse(core.term, got.success, got.next_offset)

    async def _install_in_loop(self, incoming: Incoming) -> bool:
        """Hand a fully received snapshot to the ready loop and wait until it is installed
        (True) or found covered by the log already (False)."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending_install = (incoming, fut)
        self._wake.set()
        failed: asyncio.Future[Any] = asyncio.ensure_future(self._failed_event.wait())
        try:
            await asyncio.wait([fut, failed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
        if not fut.done():
            if self._pending_install is not None and self._pending_install[1] is fut:
                self._pending_install = None
            incoming.writer.abort()
            raise NodeStoppedError(f"node {self.node_id} stopped before the snapshot installed")
        return fut.result()

    async def _install_received(
        self, core: RaftCore, incoming: Incoming, fut: asyncio.Future[bool]
    ) -> None:
        """Between two Readies (nothing handed out is pending): install the snapshot on disk,
        then — only then — let the core and the state machine adopt it. A full disk leaves the
        old snapshot, the log and the core untouched; any other failure stops the node."""
        self._pending_install = None
        meta = incoming.meta
        try:
            if meta.last_index <= core.commit_index:
                incoming.writer.abort()
                installed = False
            else:
                view = await self._snapshots.commit(incoming)
                # Durable from here. The core keeps entries that arrived during the commit.
                core.snapshot_installed(meta, view)
                self._snapshots.keep_only(core.snapshot_data)
                self._snapshots.restore(view)
                self._applied = meta.last_index
                self._resolve_overtaken(meta.last_index)
                installed = True
        except DiskFullError as exc:
            log.error("disk full on %s: snapshot %d not installed", self.node_id, meta.last_index)
            if not fut.done():
                fut.set_exception(exc)
            return
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc)
            raise
        if not fut.done():
            fut.set_result(installed)

    def _close_snapshots(self) -> None:
        """Stopping: abort a transfer under way and close the files the core sent from."""
        pending, self._pending_install = self._pending_install, None
        if pending is not None:
            pending[0].writer.abort()
            if not pending[1].done():
                pending[1].set_exception(NodeStoppedError(f"node {self.node_id} stopped"))
        self._snapshots.close()
