"""The keyspace of a sharded cluster: 16384 hash slots, as Redis Cluster defines them.

Rule: a key's slot is Redis Cluster's ``HASH_SLOT`` — CRC16-XMODEM of the key's UTF-8 bytes
modulo 16384, hashing only the hash tag when the key has one — and the slots of ``G`` data
groups are ``G`` contiguous ranges fixed by ``G`` alone. This module imports nothing of
raftcache (an import-linter contract keeps it so): the Python clients compute slots with it
too, and a client and a store can never disagree about where a key lives. See
docs/sharding.md.
"""

from __future__ import annotations

import binascii
from typing import Final

#: Redis Cluster's number of hash slots.
SLOTS: Final = 16384

#: The most data groups a cluster may have: one slot each.
MAX_GROUPS: Final = SLOTS


def hash_tag(key: bytes) -> bytes:
    """The part of ``key`` that is hashed: what lies between the first ``{`` and the first
    ``}`` after it, when that is not empty; otherwise the whole key (Redis Cluster's rule)."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def key_slot(key: str | bytes) -> int:
    """The hash slot of ``key`` (0..16383); a ``str`` is hashed as its UTF-8 bytes."""
    data = key.encode() if isinstance(key, str) else key
    # crc_hqx is CRC-16/CCITT with the initial value given: with 0 it is XMODEM, Redis's CRC16.
    return binascii.crc_hqx(hash_tag(data), 0) & (SLOTS - 1)


def check_groups(groups: int) -> int:
    """``groups`` when it is a valid number of data groups, else ValueError naming the range."""
    if type(groups) is not int or not 1 <= groups <= MAX_GROUPS:
        raise ValueError(
            f"the number of groups must be an integer in 1..{MAX_GROUPS}, not {groups!r}"
        )
    return groups


def group_range(group: int, groups: int) -> range:
    """The slots data group ``group`` owns among ``groups``: ``[⌊g·S/G⌋, ⌊(g+1)·S/G⌋)``."""
    check_groups(groups)
    if type(group) is not int or not 0 <= group < groups:
        raise ValueError(f"group must be in 0..{groups - 1}, not {group!r}")
    return range(group * SLOTS // groups, (group + 1) * SLOTS // groups)


def slot_group(slot: int, groups: int) -> int:
    """The data group that owns ``slot`` among ``groups`` (the inverse of ``group_range``)."""
    check_groups(groups)
    if type(slot) is not int or not 0 <= slot < SLOTS:
        raise ValueError(f"slot must be in 0..{SLOTS - 1}, not {slot!r}")
    # The largest g with ⌊g·S/G⌋ ≤ slot: ⌊((slot+1)·G - 1) / S⌋.
    return ((slot + 1) * groups - 1) // SLOTS


def key_group(key: str | bytes, groups: int) -> int:
    """The data group that owns ``key`` among ``groups``."""
    return slot_group(key_slot(key), groups)


__all__ = [
    "MAX_GROUPS",
    "SLOTS",
    "check_groups",
    "group_range",
    "hash_tag",
    "key_group",
    "key_slot",
    "slot_group",
]
