"""The ``BOOTSTRAP`` file: the voters a node's cluster was first started with.

Rule: written once, atomically, before the node can vote or campaign for the first time, and
never rewritten; from then on a node's membership comes from its data (this record, then its
snapshot's configuration, then every configuration entry in its log), never from the command
line again. Without it a restart with a mistyped or stale ``--peers`` could make a node the
only voter of a cluster of its own (split brain). Human-readable JSON with a format version:
``{"format": 1, "voters": ["n1", "n2", "n3"]}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from raftcache.storage.base import StorageCorruptError
from raftcache.storage.checks import json_file

BOOTSTRAP_NAME = "BOOTSTRAP"
VERSION = 1


def encode_bootstrap(voters: Sequence[str]) -> bytes:
    obj = {"format": VERSION, "voters": sorted(voters)}
    return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)


def decode_bootstrap(data: bytes, path: str) -> tuple[str, ...]:
    """The recorded voters; a damaged file or an unknown format version raises."""
    voters = json_file(data, path, "bootstrap", (VERSION,)).get("voters")
    if not isinstance(voters, list) or not all(isinstance(v, str) and v for v in voters):
        raise StorageCorruptError(f"{path}: voters must be a list of node ids")
    return tuple(sorted(voters))
