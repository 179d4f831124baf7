"""A long seeded run against the model, with many keys and a tiny LRU-front cache, so that the
store's cached prefix of the LRU order is refilled and invalidated many times."""

from __future__ import annotations

import random

import pytest

from raftcache.cache import store
from raftcache.cache.commands import (
    BatchOp,
    DeleteOp,
    GetOp,
    SetOp,
    encode_batch,
    encode_delete,
    encode_expire,
    encode_set,
    encode_touch,
)
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.results import CommandError
from raftcache.cache.snapshot import decode_snapshot
from tests.cache.model import ModelCache


@pytest.mark.parametrize("seed", [1, 2])
def test_long_run_with_small_front_batches(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    monkeypatch.setattr(store, "_FRONT_BATCH", 3)
    rng = random.Random(seed)
    machine = CacheStateMachine(max_keys=25, max_bytes=400)
    model = ModelCache(25, 400)
    keys = [f"key{i}" for i in range(60)]
    now = 0.0
    for index in range(1, 2001):
        now += rng.random()
        key = rng.choice(keys)
        roll = rng.random()
        if roll < 0.5:
            ttl = rng.choice([None, None, 1.0, 5.0])
            value = bytes(rng.randrange(30))
            data = encode_set(key, value, now=now, ttl=ttl)
            expected = model.set(index, now, key, value, ttl, None, False)
        elif roll < 0.6:
            data = encode_delete(key, now=now)
            expected = model.delete(now, key, None)
        elif roll < 0.75:
            touched = rng.sample(keys, 5)
            data = encode_touch(touched, now=now)
            expected = model.touch(now, touched)
        elif roll < 0.85:
            expired = machine.expired_keys(now, 4)
            data = encode_expire(expired, now=now)
            expected = model.expire(now, expired)
        else:
            ops: list[BatchOp] = [
                GetOp(key),
                SetOp(rng.choice(keys), b"b" * 9),
                DeleteOp(rng.choice(keys)),
            ]
            data = encode_batch(ops, now=now)
            expected = model.batch(index, now, ops)
        result = machine.apply_entry(index, data)
        assert not isinstance(result, CommandError)
        assert result == expected, index
        if index % 100 == 0:
            machine.check_invariants()
            assert list(decode_snapshot(machine.snapshot()).records) == model.lru
    stats = machine.stats()
    assert (stats["evictions"], stats["expirations"]) == (model.evictions, model.expirations)
    assert stats["evictions"] > 100
