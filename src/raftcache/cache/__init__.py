"""The replicated cache: its state machine (pure) and the async service over a Raft node.

Rule: ``machine`` and everything it imports are pure and deterministic (no clock, no I/O);
only ``service`` and ``background`` touch asyncio. See docs/cache.md for the data model and
the TTL, eviction and session rules.
"""

from __future__ import annotations

from raftcache.cache.commands import (
    BatchOp,
    DeleteOp,
    GetOp,
    Session,
    SetOp,
    decode,
    encode_batch,
    encode_decr,
    encode_delete,
    encode_expire,
    encode_incr,
    encode_set,
    encode_touch,
)
from raftcache.cache.entries import Item
from raftcache.cache.errors import (
    CacheError,
    CounterOverflow,
    CounterOverflowError,
    InvalidCommand,
    InvalidCommandError,
    NotACounter,
    NotACounterError,
    PreconditionFailed,
    PreconditionFailedError,
    StaleSequence,
    StaleSequenceError,
    ValueTooLarge,
    ValueTooLargeError,
)
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.results import CommandError, ErrorCode, IncrResult
from raftcache.cache.service import CacheService
from raftcache.cache.snapshot import SnapshotFormatError

__all__ = [
    "BatchOp",
    "CacheError",
    "CacheService",
    "CacheStateMachine",
    "CommandError",
    "CounterOverflow",
    "CounterOverflowError",
    "DeleteOp",
    "ErrorCode",
    "GetOp",
    "IncrResult",
    "InvalidCommand",
    "InvalidCommandError",
    "Item",
    "NotACounter",
    "NotACounterError",
    "PreconditionFailed",
    "PreconditionFailedError",
    "Session",
    "SetOp",
    "SnapshotFormatError",
    "StaleSequence",
    "StaleSequenceError",
    "ValueTooLarge",
    "ValueTooLargeError",
    "decode",
    "encode_batch",
    "encode_decr",
    "encode_delete",
    "encode_expire",
    "encode_incr",
    "encode_set",
    "encode_touch",
]
