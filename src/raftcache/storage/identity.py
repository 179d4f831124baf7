"""The ``IDENTITY`` file: which node of which cluster a data directory belongs to.

Rule: written once by ``bind`` (atomically, like every small file) and checked on every later
``bind``, so that a node started on another node's directory, or a directory reused across
clusters, is refused instead of silently mixing logs. Human-readable JSON with a format version:
``{"format": 2, "node_id": "n1", "cluster_id": "c1" | null}``.

The format doubles as the data directory's layout version. Format 2 marks a directory whose log
segments may carry a salt in their names (``segments.py``), which a release that wrote format 1
would not list — it would start on a shorter log without a word. A format-1 file is read and
rewritten as format 2 by the first ``bind``; a release that only knows format 1 then refuses the
directory ("unknown identity format 2") instead of losing its log.
"""

from __future__ import annotations

from typing import Any

import orjson

from raftcache.storage.base import StorageCorruptError
from raftcache.storage.checks import json_file

IDENTITY_NAME = "IDENTITY"
VERSION = 2
#: Formats this release reads (it writes ``VERSION``).
READABLE = (1, 2)


def encode_identity(node_id: str, cluster_id: str | None) -> bytes:
    obj = {"format": VERSION, "node_id": node_id, "cluster_id": cluster_id}
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)


def identity_format(data: bytes) -> object:
    """The format a decodable identity file declares (``decode_identity`` checked it)."""
    obj: Any = orjson.loads(data)
    return obj.get("format")


def decode_identity(data: bytes, path: str) -> tuple[str, str | None]:
    """(node_id, cluster_id); a damaged file or an unknown format version raises."""
    obj = json_file(data, path, "identity", READABLE)
    node_id, cluster_id = obj.get("node_id"), obj.get("cluster_id")
    if not isinstance(node_id, str) or not (cluster_id is None or isinstance(cluster_id, str)):
        raise StorageCorruptError(f"{path}: node_id/cluster_id have the wrong types")
    return node_id, cluster_id
