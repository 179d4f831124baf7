"""The keyspace: Redis Cluster's HASH_SLOT, hash tags, and the slot ranges of G groups."""

from __future__ import annotations

import pytest
import redis.crc
from hypothesis import given
from hypothesis import strategies as st

from raftcache.slots import (
    MAX_GROUPS,
    SLOTS,
    check_groups,
    group_range,
    hash_tag,
    key_group,
    key_slot,
    slot_group,
)


@pytest.mark.parametrize(
    ("key", "slot"),
    [
        # From Redis's documentation of CLUSTER KEYSLOT and of the CRC16 it uses.
        ("somekey", 11058),
        ("foo{hash_tag}", 2515),
        ("123456789", 0x31C3),
        ("", 0),
    ],
)
def test_slots_are_redis_clusters(key: str, slot: int) -> None:
    assert key_slot(key) == slot
    assert key_slot(key.encode()) == slot


@pytest.mark.parametrize(
    ("key", "hashed"),
    [
        # The examples of the Redis Cluster specification.
        (b"{user1000}.following", b"user1000"),
        (b"{user1000}.followers", b"user1000"),
        (b"foo{}{bar}", b"foo{}{bar}"),
        (b"foo{{bar}}zap", b"{bar"),
        (b"foo{bar}{zap}", b"bar"),
        (b"no tag", b"no tag"),
        (b"open{only", b"open{only"),
        (b"}{x}", b"x"),
    ],
)
def test_hash_tags_follow_the_cluster_specification(key: bytes, hashed: bytes) -> None:
    assert hash_tag(key) == hashed


def test_keys_sharing_a_hash_tag_share_a_slot() -> None:
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert key_slot("user:{42}:cart") == key_slot("42")


@given(st.binary(max_size=64))
def test_the_slot_agrees_with_redis_py(key: bytes) -> None:
    assert key_slot(key) == redis.crc.key_slot(key)


@given(st.text(max_size=32))
def test_a_str_key_is_hashed_as_utf8(key: str) -> None:
    assert key_slot(key) == redis.crc.key_slot(key.encode())


@pytest.mark.parametrize("groups", [1, 2, 3, 4, 5, 7, 16, 1000, 16383, MAX_GROUPS])
def test_every_slot_belongs_to_exactly_one_group(groups: int) -> None:
    owners = [0] * SLOTS
    sizes = []
    for group in range(groups):
        slots = group_range(group, groups)
        sizes.append(len(slots))
        for slot in slots:
            owners[slot] += 1
            assert slot_group(slot, groups) == group
    assert owners == [1] * SLOTS
    assert max(sizes) - min(sizes) <= 1  # ranges as even as the division allows


@given(st.integers(1, MAX_GROUPS), st.integers(0, SLOTS - 1))
def test_slot_group_inverts_group_range(groups: int, slot: int) -> None:
    assert slot in group_range(slot_group(slot, groups), groups)


def test_one_group_owns_every_slot() -> None:
    assert group_range(0, 1) == range(SLOTS)
    assert key_group("anything", 1) == 0


@pytest.mark.parametrize("bad", [0, -1, MAX_GROUPS + 1, 2.0, "4", True])
def test_a_bad_group_count_is_refused_by_name(bad: object) -> None:
    with pytest.raises(ValueError, match="number of groups"):
        check_groups(bad)  # type: ignore[arg-type]


def test_out_of_range_group_and_slot_are_refused() -> None:
    with pytest.raises(ValueError, match=r"group must be in 0\.\.3"):
        group_range(4, 4)
    with pytest.raises(ValueError, match="slot must be in"):
        slot_group(SLOTS, 4)
