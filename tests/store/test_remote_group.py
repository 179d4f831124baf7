"""``RemoteGroup``: whom a store sends a group's requests to when it holds no replica of it."""

from __future__ import annotations

import pytest

from raftcache.store import RemoteGroup


def test_first_guess_is_a_replica_and_spreads_over_stores() -> None:
    members = ("s1", "s2", "s3")
    guesses = {RemoteGroup(f"s{i}", "g0", members).leader_id for i in range(4, 40)}
    assert guesses <= set(members)
    assert len(guesses) > 1  # not every store starts at the same replica


def test_moved_follows_a_hint_of_the_group_else_rotates() -> None:
    remote = RemoteGroup("s9", "g3", ("s1", "s2", "s3"))
    remote.moved("s2")
    assert remote.leader_id == "s2"
    remote.moved()
    assert remote.leader_id == "s3"
    remote.moved()
    assert remote.leader_id == "s1"
    remote.moved("s9")  # itself: no use, the next replica is tried
    assert remote.leader_id == "s2"
    assert remote.leader_address() is None
    assert remote.node_id == "s9"


def test_a_hint_naming_a_store_it_did_not_know_is_followed() -> None:
    """Found end to end: a store restarted after a drain knew its groups' stores from its
    bootstrap placement only; a group whose leader had moved to another store answered it
    "not the leader, s7.1 is", which it ignored — so it never reached the leader."""
    remote = RemoteGroup("s9", "g3", ("s1", "s2"))
    remote.moved("s7.1")
    assert remote.leader_id == "s7"
    assert remote.members == ("s1", "s2", "s7")


def test_a_group_without_replicas_is_refused() -> None:
    with pytest.raises(ValueError, match="no replicas"):
        RemoteGroup("s1", "g0", ())
