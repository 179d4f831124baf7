"""Argument checks shared by every storage, so that MemoryStorage and FileStorage agree exactly.

Rule: a storage never stores a log with holes, overlaps or entries the snapshot already covers;
bad input from the driver is a bug and is refused with ``ValueError`` before anything changes.
The small JSON files are read one way (``json_file``): damage is corruption, an unknown format
is refused, never guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from raftcache.protocol.messages import LogEntry
from raftcache.storage.base import StorageCorruptError, StorageFormatError, StorageIdentityError


def check_batch(entries: Sequence[LogEntry], snapshot_index: int, last_index: int) -> None:
    """Refuse a batch that is not contiguous, leaves a hole after ``last_index`` or rewrites
    entries at or below ``snapshot_index`` (committed entries never change)."""
    first = entries[0].index
    if first <= snapshot_index:
        raise ValueError(
            f"append at index {first} reaches into the snapshot (last included {snapshot_index})"
        )
    if first > last_index + 1:
        raise ValueError(f"append at index {first} leaves a hole after last index {last_index}")
    expected = first
    for entry in entries:
        if entry.index != expected:
            raise ValueError(f"batch is not contiguous: index {entry.index} after {expected - 1}")
        if entry.term < 0:
            raise ValueError(f"entry {entry.index} has a negative term {entry.term}")
        expected += 1


def check_snapshot_order(new_index: int, stored_index: int) -> None:
    """A snapshot never replaces a newer one: the log it would need is already compacted."""
    if new_index < stored_index:
        raise ValueError(
            f"snapshot at index {new_index} is older than the stored snapshot at {stored_index}"
        )


def merge_identity(
    recorded: tuple[str, str | None] | None, node_id: str, cluster_id: str | None, where: str
) -> tuple[str, str | None]:
    """The identity to record after ``bind(node_id, cluster_id)``, or ``StorageIdentityError``.

    A recorded cluster of None is filled in; a ``cluster_id`` of None matches any cluster.
    """
    if not node_id:
        raise ValueError("node_id must be a non-empty string")
    if recorded is None:
        return node_id, cluster_id
    old_node, old_cluster = recorded
    if old_node != node_id:
        raise StorageIdentityError(
            f"{where} belongs to node {old_node}, not {node_id}: refusing to use another "
            "node's data (point --data-dir at this node's own directory)"
        )
    if cluster_id is not None and old_cluster is not None and old_cluster != cluster_id:
        raise StorageIdentityError(
            f"{where} belongs to cluster {old_cluster}, not {cluster_id}: refusing to mix clusters"
        )
    return node_id, old_cluster if cluster_id is None else cluster_id


def json_file(data: bytes, path: str, what: str, formats: Sequence[int]) -> dict[str, Any]:
    """The JSON object of one of the small human-readable files (``IDENTITY``, ``BOOTSTRAP``):
    damage raises ``StorageCorruptError``, a ``format`` not in ``formats`` raises
    ``StorageFormatError`` naming ``what``."""
    try:
        obj: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StorageCorruptError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise StorageCorruptError(f"{path}: expected a JSON object")
    if obj.get("format") not in formats:
        raise StorageFormatError(f"{path}: unknown {what} format {obj.get('format')!r}")
    return obj
