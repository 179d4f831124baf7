"""The compact memory layout of the entry store, and the expiry index's order.

The store keeps one ``bytes`` record per key and, for keys with a TTL, one ``bytes`` entry in
the expiry index (``raftcache.cache.expiry_index``). These tests guard that layout (no per-key
object with a ``__dict__``, no tuple and float per TTL key) and prove that the byte order of the
index is exactly the ``(expires_at, key)`` tuple order it replaced — the order in which every
replica expires and evicts.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftcache.cache.entries import HEADER_SIZE, NEVER
from raftcache.cache.expiry_index import ExpiryIndex, sortable, unsortable
from raftcache.cache.store import EntryStore

finite_or_infinite = st.floats(allow_nan=False)
# Any code point, lone surrogates included: the index must order them as ``str`` does.
keys = st.text(st.characters(exclude_categories=()), min_size=1, max_size=6)
pairs = st.lists(st.tuples(finite_or_infinite, keys), max_size=40)


@given(finite_or_infinite, finite_or_infinite)
def test_sortable_bytes_order_is_the_float_order(a: float, b: float) -> None:
    assert (sortable(a) < sortable(b)) == (a < b)
    assert (sortable(a) == sortable(b)) == (a == b)  # -0.0 == 0.0 encode alike


@given(finite_or_infinite)
def test_sortable_round_trips(t: float) -> None:
    assert unsortable(sortable(t)) == t
    assert math.copysign(1.0, unsortable(sortable(t))) == (1.0 if t >= 0 else -1.0)


@given(pairs)
def test_the_index_iterates_in_tuple_order(items: list[tuple[float, str]]) -> None:
    index = ExpiryIndex(items[: len(items) // 2])
    for t, k in items[len(items) // 2 :]:
        index.add(t, k)
    assert list(index) == sorted(items)
    assert len(index) == len(items)


@given(pairs, finite_or_infinite, st.integers(min_value=0, max_value=50))
def test_expired_and_first_expired_follow_the_tuple_order(
    items: list[tuple[float, str]], now: float, limit: int
) -> None:
    index = ExpiryIndex(items)
    due = [k for t, k in sorted(items) if t <= now]
    assert index.expired(now, limit) == due[:limit]
    assert index.first_expired(now) == (due[0] if due else None)


@given(pairs, st.data())
def test_remove_drops_exactly_one_pair(items: list[tuple[float, str]], data: st.DataObject) -> None:
    index = ExpiryIndex(items)
    if items:
        victim = data.draw(st.sampled_from(items))
        index.remove(*victim)
        rest = sorted(items)
        rest.remove(victim)
        assert list(index) == rest
    with pytest.raises(ValueError, match="not in list"):
        index.remove(1.5, "\x00never added")


def test_store_layout_is_one_bytes_per_key_and_one_bytes_per_ttl() -> None:
    store = EntryStore()
    store.put("plain", b"v" * 10, 1, NEVER, 0.0)
    store.put("ttl", b"w" * 3, 2, 50.0, 0.0)
    store.put("clé", b"", 3, 60.0, 0.0)
    store.settle(0.0)
    assert not hasattr(store, "__dict__")
    records = store.records()
    assert all(type(r) is bytes for r in records.values())
    assert [len(r) - HEADER_SIZE for r in records.values()] == [10, 3, 0]
    entries = list(store._by_expiry._entries)
    assert [type(e) for e in entries] == [bytes, bytes]
    # 8 bytes of expiry, then the key's UTF-8: no tuple, no boxed float per key.
    assert [len(e) for e in entries] == [8 + len("ttl"), 8 + len("clé".encode())]
    assert store.expired_keys(55.0, 10) == ["ttl"]
    store.check_invariants()


def test_an_overwrite_or_a_touch_keeps_one_object_per_key() -> None:
    def copy() -> str:  # a fresh object each time, as msgpack decodes every command's keys
        return "".join(["sha", "red"])

    store = EntryStore()
    first = copy()
    store.put(first, b"1", 1, NEVER, 0.0)
    store.put("other", b"x", 2, NEVER, 0.0)
    store.put(copy(), b"2", 3, 60.0, 0.0)  # overwrite: the LRU move re-inserts the key
    store.touch(copy(), 0.0)
    store.settle(0.0)
    assert list(store.records()) == ["other", "shared"]
    assert next(k for k in store.records() if k == "shared") is first
    store.check_invariants()
