"""Errors the Raft layer raises to its callers."""

from __future__ import annotations


class RaftError(Exception):
    """Base of Raft-layer errors."""


class NotLeaderError(RaftError):
    """This node is not the leader; ``leader_id`` is a hint (None when unknown)."""

    def __init__(self, leader_id: str | None, message: str | None = None) -> None:
        super().__init__(message or f"not the leader (leader hint: {leader_id})")
        self.leader_id = leader_id


class ProposalDroppedError(RaftError):
    """The proposal was certainly not appended (e.g. flow control, transfer in progress)."""


class IndeterminateError(RaftError):
    """The command was appended but leadership was lost before it committed: it may or may not
    take effect. Callers with a client session may safely retry."""


class NodeStoppedError(RaftError):
    """The node is stopped or stopping."""


class StoppedAfterAppendError(NodeStoppedError, IndeterminateError):
    """The node stopped (or failed) after the command was appended to its log and before it
    applied: the other replicas may still commit it, so it may or may not take effect. Both a
    ``NodeStoppedError`` and an ``IndeterminateError``: an answer to a write must say the latter
    (a client told "nothing happened" would apply a retried INCR twice)."""


class MembershipChangeError(RaftError):
    """A membership change was refused (another in progress, unknown node, ...)."""


class PeersMismatchError(RaftError):
    """The voters given at start (``--peers``) disagree with the membership the node's data
    records, and match no configuration it ever had: starting would change an existing
    cluster's membership from the command line, which only a membership change may do."""


class InvariantError(AssertionError):
    """A Raft invariant of the core broke (applied ≤ commit ≤ last index, a role transition
    Raft does not allow, a committed entry about to be overwritten): a bug, never a condition
    to handle. Like etcd's panics it is always checked (not an ``assert``, which ``-O`` strips)
    and the driver fails-stop on it."""
