"""The Raft messages: plain dataclasses, the vocabulary shared by core, network and storage.

Rule: this module is a leaf. It imports nothing from raftcache, so that ``raftcache.network`` and
``raftcache.storage`` can depend on it without pulling in the Raft driver.

Every message is constructible positionally in the field order of docs/network.md#messages;
fields added later always carry defaults so older positional call sites keep working. The wire codec
(``raftcache.network.codec``) is generic over these fields, so adding a field needs no codec change.
Field types are restricted to what the codec knows: ``int``, ``str``, ``bool``, ``bytes``,
``str | None`` and ``list[LogEntry]``.

Groups: every request ends with ``group``, the Raft group it belongs to on a store that hosts
replicas of several (docs/sharding.md); "" is the one group of a node that hosts one. One
connection between two stores carries every group's requests, and the receiving store's
``GroupRouter`` (``raftcache.network.groups``) hands each to its group. Responses need no group:
they travel back on their request's call. Older nodes skip the field (decoders ignore unknown
keys) and send none (it defaults to "").

Replicas: just before ``group`` every request carries ``to``, the id of the replica it is
addressed to (on a store, a group's replica may be a later *incarnation* of the store's
earlier replica of the same group, with another id: docs/sharding.md). A replica refuses a
request addressed to another id, so nothing meant for a removed incarnation — a vote, an
append whose answer would be counted for it — is ever taken by its successor. "" on a node
hosting one group; both empty fields are left off the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

#: The longest Raft group id a request may carry.
MAX_GROUP_ID_CHARS: Final = 64
#: The longest replica id a request may be addressed to (a node id's bound).
MAX_REPLICA_ID_CHARS: Final = 128


class EntryKind(IntEnum):
    """What a log entry carries. Only ``COMMAND`` entries reach the state machine."""

    COMMAND = 0
    NOOP = 1  # appended by every new leader so it can commit entries of earlier terms (§5.4.2)
    CONFIG = 2  # a membership configuration (``configuration``), JSON in ``command``


@dataclass(slots=True)
class LogEntry:
    """One slot of the replicated log."""

    term: int
    index: int
    command: bytes
    kind: int = EntryKind.COMMAND


@dataclass(slots=True)
class RequestVoteRequest:
    """RequestVote RPC (§5.2); with ``pre_vote`` the dissertation's §9.6 pre-vote round.

    ``leader_transfer`` marks a campaign started by TimeoutNow: voters then grant even though they
    heard from a leader recently (the check-quorum lease would otherwise refuse it).
    ``group``: see the module docstring.
    """

    term: int
    candidate_id: str
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    leader_transfer: bool = False
    to: str = ""
    group: str = ""


@dataclass(slots=True)
class RequestVoteResponse:
    term: int
    vote_granted: bool
    pre_vote: bool = False


@dataclass(slots=True)
class AppendEntriesRequest:
    """AppendEntries RPC (§5.3), also the heartbeat.

    ``timeout_now`` rides on this message to carry the dissertation's TimeoutNow (§3.10): the
    receiver first processes the request as usual and, if its log then matches the leader's,
    starts an election at once. ``group``: see the module docstring.
    """

    term: int
    leader_id: str
    prev_log_index: int
    prev_log_term: int
    entries: list[LogEntry] = field(default_factory=list)
    leader_commit: int = 0
    timeout_now: bool = False
    #: A heartbeat of an idle leader that stops sending them: the follower stops its election
    #: timer until it hears anything else (``RaftCore`` "quiescence"). Left off the wire when
    #: false.
    quiesce: bool = False
    to: str = ""
    group: str = ""


@dataclass(slots=True)
class AppendEntriesResponse:
    """Reply to AppendEntries.

    On success ``match_index`` is the last index the follower now shares with the leader.
    On a log mismatch ``conflict_index``/``conflict_term`` are the fast-backtracking hints of §5.3:
    the term of the follower's entry at ``prev_log_index`` (0 if it has none) and the first index
    it holds for that term (or its last index + 1 when its log is too short).
    ``transfer_declined``: the request carried TimeoutNow and the follower ignored it, being about
    to stop (``RaftCore.leaving``); its leader gives the transfer up at once. Left off the wire
    when false (a node that does not know the field ignores it, and never sets it).
    """

    term: int
    success: bool
    match_index: int = 0
    conflict_index: int = 0
    conflict_term: int = 0
    last_log_index: int = 0
    transfer_declined: bool = False


@dataclass(slots=True)
class InstallSnapshotRequest:
    """InstallSnapshot RPC (§7), sent in chunks: ``data`` is the slice at ``offset``.

    ``configuration`` is the encoded membership configuration as of ``last_included_index``
    (the same encoding as a CONFIG entry's command), sent with every chunk. ``group``: see the
    module docstring.
    """

    term: int
    leader_id: str
    last_included_index: int
    last_included_term: int
    offset: int
    data: bytes
    done: bool
    configuration: bytes = b""
    to: str = ""
    group: str = ""


@dataclass(slots=True)
class InstallSnapshotResponse:
    """Reply to an InstallSnapshot chunk.

    ``next_offset`` is the byte offset the follower expects next; ``success`` is False when the
    chunk did not start there (a lost or reordered chunk), and the leader resumes from
    ``next_offset``.
    """

    term: int
    success: bool = True
    next_offset: int = 0


RaftRequest = RequestVoteRequest | AppendEntriesRequest | InstallSnapshotRequest

#: The most AppendEntries one batch may carry (a store sends one per group it leads with a
#: follower on the peer: a few dozen at most).
MAX_BATCH_ITEMS: Final = 1024
#: How long, by default, a receiver may wait for a batch's first item with entries to be done
#: (``AppendEntriesBatch.hold``): a quarter of the default RPC timeout.
DEFAULT_BATCH_HOLD: Final = 0.5
#: The most a sender may ask a receiver to hold a batch for, in seconds.
MAX_BATCH_HOLD: Final = 10.0


@dataclass(slots=True)
class AppendEntriesBatch:
    """Many groups' AppendEntries to one peer store in one message (docs/sharding.md, "Busy
    groups stepped together"): each item is exactly the request its group would have sent
    alone, addressed by its own ``group`` and ``to``. ``hold``: the most seconds the receiver
    may wait for the first item carrying entries to be done (``batching.serve_append_batch``),
    a fraction of the sender's RPC timeout, so the whole answer beats it."""

    items: list[AppendEntriesRequest]
    hold: float = DEFAULT_BATCH_HOLD


@dataclass(slots=True)
class BatchAnswer:
    """One item's outcome: its ``response``, or (``response`` None) the error the single RPC
    would have raised — ``error`` its text, ``kind`` and ``permanent`` as ``NetworkError``'s."""

    response: AppendEntriesResponse | None = None
    error: str = ""
    kind: str = ""
    permanent: bool = False


@dataclass(slots=True)
class AppendEntriesBatchResponse:
    """The answers of an ``AppendEntriesBatch``, in its items' order."""

    items: list[BatchAnswer]


RaftResponse = RequestVoteResponse | AppendEntriesResponse | InstallSnapshotResponse
