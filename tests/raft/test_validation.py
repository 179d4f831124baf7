"""Structural validation of inbound Raft requests (raftcache.raft.validation)."""

from __future__ import annotations

import pytest

from raftcache.raft.configuration import Configuration
from raftcache.raft.messages import (
    AppendEntriesRequest,
    EntryKind,
    InstallSnapshotRequest,
    LogEntry,
    RequestVoteRequest,
)
from raftcache.raft.validation import InvalidMessageError, validate_request


def test_well_formed_requests_pass() -> None:
    entries = [LogEntry(2, 6, b"a"), LogEntry(3, 7, b"", EntryKind.NOOP)]
    validate_request(AppendEntriesRequest(3, "n1", 5, 2, entries, 4))
    validate_request(AppendEntriesRequest(3, "n1", 0, 0, [], 0))
    validate_request(RequestVoteRequest(4, "n2", 10, 3))
    conf = Configuration.of(["n1", "n2"]).encode()
    validate_request(InstallSnapshotRequest(3, "n1", 9, 2, 0, b"x", True, conf))


@pytest.mark.parametrize(
    ("req", "needle"),
    [
        (AppendEntriesRequest(3, "n1", 5, 2, [LogEntry(2, 7, b"")], 0), "contiguous"),
        (AppendEntriesRequest(3, "n1", 0, 0, [LogEntry(0, 0, b"")], 50), "contiguous"),
        (AppendEntriesRequest(3, "n1", 5, 2, [LogEntry(1, 6, b"")], 0), "outside"),
        (AppendEntriesRequest(3, "n1", 5, 2, [LogEntry(4, 6, b"")], 0), "outside"),
        (AppendEntriesRequest(3, "n1", 5, 2, [LogEntry(3, 6, b"", 9)], 0), "kind"),
        (AppendEntriesRequest(3, "n1", 5, 2, [LogEntry(3, 6, b"{", EntryKind.CONFIG)]), "config"),
        (AppendEntriesRequest(-1, "n1", -5, -1), ">= 0"),
        (AppendEntriesRequest(3, "n1", 5, 4), "prev_log_term"),
        (RequestVoteRequest(2, "n2", 10, 3), "last_log_term"),
        (InstallSnapshotRequest(3, "n1", 9, 2, 0, b"", True, b"nope"), "configuration"),
        (InstallSnapshotRequest(3, "n1", 9, 2, -1, b"", True, b""), ">= 0"),
        (InstallSnapshotRequest(3, "n1", 9, 4, 0, b"", True, b""), "last_included_term"),
    ],
)
def test_malformed_requests_are_refused(req: object, needle: str) -> None:
    with pytest.raises(InvalidMessageError, match=needle):
        validate_request(req)  # type: ignore[arg-type]
