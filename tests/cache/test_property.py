"""Property tests: the machine against the naive model, and replicas against each other.

Random command sequences (set with TTL/CAS/create-only/keep_ttl, delete, incr, batch with
incr and ttl ops, TTL-only changes with conditions, flush by prefix, expire, touch,
retried session writes) at random, non-monotonic ``now`` stamps, with and without bounds. After
every step the machine must agree with ``tests.cache.model`` on each result, every key's
visibility, the LRU order and the counters; at the end a replica fed the same log, and one
restored from a mid-run snapshot and fed the rest, must hold byte-identical snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from raftcache.cache.commands import (
    BatchCommand,
    Command,
    DeleteCommand,
    DeleteOp,
    ExpireCommand,
    GetOp,
    IncrCommand,
    Session,
    SetCommand,
    SetOp,
    TouchCommand,
    encode,
    encode_format,
)
from raftcache.cache.commands_v2 import FlushCommand, IncrOp, TtlCommand, TtlOp
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.results import CommandError, Result
from raftcache.cache.snapshot import decode_snapshot
from tests.cache.model import ModelCache

KEYS = ["a", "b", "c", "d", "é", "ключ", "k/1"]
CLIENTS = ["c1", "c2"]

keys = st.sampled_from(KEYS)
values = st.sampled_from(
    [b"", b"0", b"5", b"-7", b"x", b"9223372036854775807", b"-9223372036854775808", b"ab" * 9]
) | st.binary(max_size=12)
nows = st.integers(0, 120).map(lambda x: x / 2)
ttls = st.none() | st.integers(1, 40).map(lambda x: x / 2)
conditions = st.none() | st.just("current") | st.integers(0, 30)


@dataclass(frozen=True)
class Step:
    """One generated step: a command template, resolved against the model when run."""

    kind: str
    now: float
    args: tuple[Any, ...]
    client: str | None = None
    gap: int = 1  # log index gap (other entries, e.g. no-ops, in between)


def _step(kind: str, args: st.SearchStrategy[tuple[Any, ...]]) -> st.SearchStrategy[Step]:
    return st.builds(
        Step,
        st.just(kind),
        nows,
        args,
        st.none() | st.sampled_from(CLIENTS),
        st.integers(1, 3),
    )


# A TTL change: (ttl, at, condition) — ttl may be negative or zero (deletes the key).
expiries = st.tuples(
    st.none() | st.integers(-4, 40).map(lambda x: x / 2),
    st.none() | st.integers(0, 160).map(lambda x: x / 2),
    st.none() | st.sampled_from(["nx", "xx", "gt", "lt"]),
)
batch_ops = st.lists(
    st.tuples(
        st.sampled_from(["get", "set", "del", "incr", "ttl", "keep"]),
        keys,
        values,
        ttls,
        conditions,
        st.booleans(),
        expiries,
    ),
    max_size=5,
)
steps = st.one_of(
    _step("set", st.tuples(keys, values, ttls, conditions, st.booleans(), st.booleans())),
    _step("ttl", st.tuples(keys, expiries, conditions)),
    _step("flush", st.tuples(st.sampled_from(["", "k", "a", "é", "zz"]))),
    _step("del", st.tuples(keys, conditions)),
    _step("incr", st.tuples(keys, st.sampled_from([1, -1, 5, 2**62, -(2**62)]))),
    _step("batch", st.tuples(batch_ops)),
    _step("expire", st.tuples(st.lists(keys, max_size=3))),
    _step("touch", st.tuples(st.lists(keys, max_size=3))),
    _step("retry", st.just(())),
)
bounds = st.sampled_from([(None, None), (3, None), (None, 40), (4, 60), (1, None)])


def _condition(choice: Any, model: ModelCache, key: str, now: float) -> int | None:
    return model.version(key, now) if choice == "current" else choice


def _build(
    step: Step, model: ModelCache, machine: CacheStateMachine, session: Session | None
) -> Command:
    now, a = step.now, step.args
    if step.kind == "set":
        cond = _condition(a[3], model, a[0], now)
        if_absent = a[4] and cond is None
        keep = a[5] and a[2] is None
        return SetCommand(now, a[0], a[1], a[2], cond, if_absent, session, keep)
    if step.kind == "ttl":
        return TtlCommand(now, _ttl_op(a[0], a[1], _condition(a[2], model, a[0], now)), session)
    if step.kind == "flush":
        return FlushCommand(now, a[0], session)
    if step.kind == "del":
        return DeleteCommand(now, a[0], _condition(a[1], model, a[0], now), session)
    if step.kind == "incr":
        return IncrCommand(now, a[0], a[1], session)
    if step.kind == "batch":
        ops: list[GetOp | SetOp | DeleteOp | IncrOp | TtlOp] = []
        for name, key, value, ttl, cond, absent, expiry in a[0]:
            if name == "get":
                ops.append(GetOp(key))
            elif name in ("set", "keep"):
                version = _condition(cond, model, key, now)
                keep = name == "keep"
                ops.append(
                    SetOp(
                        key,
                        value,
                        None if keep else ttl,
                        version,
                        absent and version is None,
                        keep,
                    )
                )
            elif name == "incr":
                ops.append(IncrOp(key, -3 if absent else 2**62))
            elif name == "ttl":
                ops.append(_ttl_op(key, expiry, _condition(cond, model, key, now)))
            else:
                ops.append(DeleteOp(key, _condition(cond, model, key, now)))
        return BatchCommand(now, tuple(ops), session)
    listed = tuple(a[0])
    if step.kind == "expire":
        return ExpireCommand(now, tuple(machine.expired_keys(now, 2)) + listed)
    return TouchCommand(now, listed)


def _ttl_op(key: str, expiry: tuple[Any, Any, Any], if_version: int | None) -> TtlOp:
    ttl, at, condition = expiry
    if at is not None:
        ttl = None  # one of the two
    if ttl is None and at is None:
        condition = None  # PERSIST takes no condition
    return TtlOp(key, ttl, at, condition, if_version)


def _model_apply(model: ModelCache, index: int, cmd: Command) -> Result:
    session = getattr(cmd, "session", None)
    if session is not None and (session.client_id, session.seq) in model.sessions:
        return model.sessions[(session.client_id, session.seq)]
    if isinstance(cmd, SetCommand):
        result = model.set(
            index, cmd.now, cmd.key, cmd.value, cmd.ttl, cmd.if_version, cmd.if_absent, cmd.keep_ttl
        )
    elif isinstance(cmd, TtlCommand):
        result = model.ttl(index, cmd.now, cmd.op)
    elif isinstance(cmd, FlushCommand):
        result = model.flush(cmd.now, cmd.prefix)
    elif isinstance(cmd, DeleteCommand):
        result = model.delete(cmd.now, cmd.key, cmd.if_version)
    elif isinstance(cmd, IncrCommand):
        result = model.incr(index, cmd.now, cmd.key, cmd.by)
    elif isinstance(cmd, ExpireCommand):
        result = model.expire(cmd.now, list(cmd.keys))
    elif isinstance(cmd, TouchCommand):
        result = model.touch(cmd.now, list(cmd.keys))
    else:
        assert isinstance(cmd, BatchCommand)
        result = model.batch(index, cmd.now, cmd.ops)
    if session is not None:
        model.sessions[(session.client_id, session.seq)] = result
    return result


def _normal(result: Result) -> Any:
    if isinstance(result, CommandError):
        return ("error", result.code, result.version, result.op_index)
    return result


def _check_agree(machine: CacheStateMachine, model: ModelCache, now: float) -> None:
    machine.check_invariants()
    for key in KEYS:
        item = machine.get(key, now)
        entry = model.live(key, now)
        if entry is None:
            assert item is None, key
        else:
            assert item is not None, key
            assert (item.value, item.version, item.expires_at) == (
                entry.value,
                entry.version,
                entry.expires_at,
            )
    listed, cursor = machine.list_keys("", None, 100, now)
    assert listed == sorted(k for k in model.data if model.live(k, now) is not None)
    assert cursor is None
    stats = machine.stats()
    assert stats["keys"] == len(model.data)
    assert stats["bytes"] == model.total_bytes()
    assert stats["bytes_peak"] == model.bytes_peak
    assert stats["evictions"] == model.evictions
    assert stats["expirations"] == model.expirations
    assert list(decode_snapshot(machine.snapshot()).records) == model.lru


@settings(max_examples=300)
@given(bounds, st.lists(steps, max_size=40), nows)
def test_machine_agrees_with_model(
    bound: tuple[int | None, int | None], plan: list[Step], probe: float
) -> None:
    max_keys, max_bytes = bound
    machine = CacheStateMachine(max_keys=max_keys, max_bytes=max_bytes, session_ttl_s=1e9)
    model = ModelCache(max_keys, max_bytes)
    seqs = dict.fromkeys(CLIENTS, 0)
    # The cluster's first entry enables command format 2 (TTL, FLUSH, incr/ttl batch ops).
    log: list[tuple[int, bytes]] = [(1, encode_format(2, now=0.0))]
    assert machine.apply_entry(*log[0]) == 2
    last_session_step: tuple[Step, Session] | None = None
    index = 1
    for step in plan:
        if step.kind == "retry":
            if last_session_step is None:
                continue
            # A client retrying its last write: same fields and seq, stamped with a new now.
            first, session = last_session_step
            cmd = _build(Step(first.kind, step.now, first.args), model, machine, session)
        else:
            session = None
            if step.client is not None and step.kind not in ("expire", "touch"):
                seqs[step.client] += 1
                session = Session(step.client, seqs[step.client])
            cmd = _build(step, model, machine, session)
            if session is not None:
                last_session_step = (step, session)
        index += step.gap
        data = encode(cmd)
        log.append((index, data))
        expected = _model_apply(model, index, cmd)
        assert _normal(machine.apply_entry(index, data)) == _normal(expected)
        _check_agree(machine, model, step.now)
    _check_agree(machine, model, probe)
    _check_replicas(machine, log, max_keys, max_bytes)


def _check_replicas(
    machine: CacheStateMachine,
    log: list[tuple[int, bytes]],
    max_keys: int | None,
    max_bytes: int | None,
) -> None:
    final = machine.snapshot()
    replica = CacheStateMachine(max_keys=max_keys, max_bytes=max_bytes, session_ttl_s=1e9)
    for index, data in log[: len(log) // 2]:
        replica.apply_entry(index, data)
    restored = CacheStateMachine(max_keys=max_keys, max_bytes=max_bytes, session_ttl_s=1e9)
    restored.restore(replica.snapshot())
    for index, data in log[len(log) // 2 :]:
        replica.apply_entry(index, data)
        restored.apply_entry(index, data)
    assert replica.snapshot() == final
    assert restored.snapshot() == final
    restored.check_invariants()
