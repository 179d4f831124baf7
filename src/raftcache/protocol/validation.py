"""Structural checks of inbound Raft requests, before they reach the core.

Rule: a request that no correct peer could send is refused with ``InvalidMessageError`` (a
``ValueError``; transports answer it with a 400) and never reaches ``RaftCore``, which assumes
well-formed input (asserts, not checks). Well-formedness here is local: non-negative numbers,
entries contiguous right after ``prev_log_index`` with terms that never decrease and never exceed
the request's term, known entry kinds, a decodable configuration. Whether the sender is *right*
(its term, its log) is the core's business. A leaf: imports only other leaves.
"""

from __future__ import annotations

import math

from raftcache.protocol.configuration import Configuration
from raftcache.protocol.messages import (
    MAX_BATCH_HOLD,
    MAX_BATCH_ITEMS,
    MAX_GROUP_ID_CHARS,
    MAX_REPLICA_ID_CHARS,
    AppendEntriesBatch,
    AppendEntriesRequest,
    EntryKind,
    InstallSnapshotRequest,
    RaftRequest,
    RequestVoteRequest,
)

_KINDS = frozenset(int(k) for k in EntryKind)


class InvalidMessageError(ValueError):
    """A Raft request that is malformed beyond what its wire types say."""


def _non_negative(**fields: int) -> None:
    for name, value in fields.items():
        if value < 0:
            raise InvalidMessageError(f"{name} must be >= 0, got {value}")


def _check_group(group: str) -> None:
    if len(group) > MAX_GROUP_ID_CHARS or not all(c in _GROUP_CHARS for c in group):
        raise InvalidMessageError(
            f"group must be at most {MAX_GROUP_ID_CHARS} characters of [A-Za-z0-9_.-], "
            f"got {group[:80]!r}"
        )


_GROUP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def validate_request(req: RaftRequest) -> None:
    """Raise ``InvalidMessageError`` if ``req`` cannot come from a correct Raft peer."""
    if req.group:
        _check_group(req.group)
    if req.to and (
        len(req.to) > MAX_REPLICA_ID_CHARS or not all(c in _GROUP_CHARS for c in req.to)
    ):
        raise InvalidMessageError(
            f"to must be at most {MAX_REPLICA_ID_CHARS} characters of [A-Za-z0-9_.-], "
            f"got {req.to[:80]!r}"
        )
    if isinstance(req, AppendEntriesRequest):
        _validate_append(req)
    elif isinstance(req, RequestVoteRequest):
        _non_negative(
            term=req.term, last_log_index=req.last_log_index, last_log_term=req.last_log_term
        )
        if req.last_log_term > req.term:
            raise InvalidMessageError("last_log_term is above the candidate's term")
    elif isinstance(req, InstallSnapshotRequest):
        _non_negative(
            term=req.term,
            last_included_index=req.last_included_index,
            last_included_term=req.last_included_term,
            offset=req.offset,
        )
        if req.last_included_term > req.term:
            raise InvalidMessageError("last_included_term is above the leader's term")
        if req.configuration:  # empty: the sender had no configuration to add (keep ours)
            try:
                Configuration.decode(req.configuration)
            except (ValueError, TypeError, KeyError) as exc:
                raise InvalidMessageError(f"undecodable configuration: {exc}") from None


def validate_message(msg: RaftRequest | AppendEntriesBatch) -> None:
    """``validate_request`` or, for a batch, ``validate_batch``: what a Raft route checks."""
    if isinstance(msg, AppendEntriesBatch):
        validate_batch(msg)
    else:
        validate_request(msg)


def validate_batch(batch: AppendEntriesBatch) -> None:
    """Raise ``InvalidMessageError`` if any item of ``batch`` is invalid (naming it), or if it
    is empty or larger than ``MAX_BATCH_ITEMS``, or its ``hold`` is not a number of seconds in
    (0, ``MAX_BATCH_HOLD``]: one bad item refuses the whole batch, as a peer that sends one is
    not a correct peer."""
    if not 0 < len(batch.items) <= MAX_BATCH_ITEMS:
        raise InvalidMessageError(
            f"a batch carries 1 to {MAX_BATCH_ITEMS} items, got {len(batch.items)}"
        )
    if not (math.isfinite(batch.hold) and 0 < batch.hold <= MAX_BATCH_HOLD):
        raise InvalidMessageError(f"hold must be in (0, {MAX_BATCH_HOLD:g}] s, got {batch.hold}")
    for i, item in enumerate(batch.items):
        try:
            validate_request(item)
        except InvalidMessageError as exc:
            raise InvalidMessageError(f"items[{i}]: {exc}") from None


def _validate_append(req: AppendEntriesRequest) -> None:
    _non_negative(
        term=req.term,
        prev_log_index=req.prev_log_index,
        prev_log_term=req.prev_log_term,
        leader_commit=req.leader_commit,
    )
    if req.prev_log_term > req.term:
        raise InvalidMessageError("prev_log_term is above the leader's term")
    expected, last_term = req.prev_log_index + 1, req.prev_log_term
    for i, entry in enumerate(req.entries):
        if entry.index != expected:
            raise InvalidMessageError(
                f"entries[{i}].index is {entry.index}, expected {expected} (contiguous after "
                "prev_log_index)"
            )
        if not last_term <= entry.term <= req.term:
            raise InvalidMessageError(
                f"entries[{i}].term {entry.term} outside [{last_term}, {req.term}]"
            )
        if entry.kind not in _KINDS:
            raise InvalidMessageError(f"entries[{i}].kind {entry.kind} is unknown")
        if entry.kind == EntryKind.CONFIG:
            try:
                Configuration.decode(entry.command)
            except (ValueError, TypeError, KeyError) as exc:
                raise InvalidMessageError(f"entries[{i}]: undecodable configuration") from exc
        expected, last_term = expected + 1, entry.term
