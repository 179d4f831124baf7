"""Lua scripts in the state machine (command format 4): three replicas applying the same log
reach the same state and replies; the sandbox refuses I/O, clocks, randomness and escapes; a
runaway script stops at the same point everywhere; the script table rides in snapshots; and a
cluster not yet at format 4 refuses EVAL with the rolling-upgrade error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftcache.cache.commands import encode, encode_format
from raftcache.cache.commands_v4 import (
    EvalCommand,
    ScriptFlushCommand,
    ScriptLoadCommand,
    ScriptResult,
    reply_from_json,
    reply_to_json,
)
from raftcache.cache.errors import NoScriptError
from raftcache.cache.formats import FormatNotEnabled
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.results import CommandError, ErrorCode
from raftcache.cache.script_commands import NO_KEYS
from raftcache.cache.scripting import ErrorReply, Reply, Status, sha1_hex
from raftcache.cache.watch import WatchHistory
from raftcache.slots import key_slot
from tests.cache.cluster import CacheCluster
from tests.cache.helpers import Log

NOW = 1_700_000_000.0


class Replicas:
    """Three machines fed the same entries, at format 4."""

    def __init__(self) -> None:
        self.machines = [CacheStateMachine() for _ in range(3)]
        self.index = 0
        self.apply(encode_format(4, now=NOW))

    def apply(self, entry: bytes) -> object:
        self.index += 1
        results = [m.apply_entry(self.index, entry) for m in self.machines]
        assert all(r == results[0] for r in results), results
        return results[0]

    def eval(
        self, body: str, keys: tuple[str, ...] = (), args: tuple[bytes, ...] = (), **kw: Any
    ) -> object:
        result = self.apply(encode(EvalCommand(NOW, body.encode(), keys, args, **kw)))
        assert isinstance(result, ScriptResult)
        return result.reply

    def same_state(self) -> None:
        snapshots = {m.snapshot() for m in self.machines}
        assert len(snapshots) == 1
        assert len({m.digest for m in self.machines}) == 1


def test_three_replicas_reach_the_same_state_and_replies() -> None:
    r = Replicas()
    script = """
        local total = 0
        for i = 1, 50 do
          redis.call('SET', 'k' .. i, i * math.random(1000), 'PX', 1000 * i)
          total = total + redis.call('INCRBY', 'sum', i)
        end
        local keys = {}
        for k, v in pairs({a = 1, b = 2, c = 3, d = 4, e = 5}) do keys[#keys + 1] = k end
        return {total, table.concat(keys, ','), redis.call('PTTL', 'k7'), tostring({})}
    """
    reply = r.eval(script)
    assert isinstance(reply, list)
    assert reply[2] == 7000
    assert reply[3] == b"table"  # no address leaks into a reply or a value
    r.same_state()
    # The same script again: math.random restarts from the same seed at every run.
    assert r.eval("return math.random(1000000)") == r.eval("return math.random(1000000)")


@pytest.mark.parametrize(
    "body",
    [
        "return os.time()",
        "return io.open('/etc/passwd')",
        "return require('os')",
        "return loadstring('return 1')()",
        "return dofile('/etc/passwd')",
        "return debug.getinfo(1)",
        "return coroutine.create(print)",
        "return getfenv(0).os",
        "return collectgarbage('count')",
        "return python.eval('1')",
        "return string.dump(function() end)",
    ],
)
def test_the_sandbox_refuses_io_time_and_escapes(body: str) -> None:
    r = Replicas()
    reply = r.eval(body)
    assert isinstance(reply, ErrorReply), reply
    assert reply.text.startswith("ERR user_script:1: ")


def test_non_deterministic_commands_are_refused_with_redis_text() -> None:
    r = Replicas()
    for name in ("TIME", "RANDOMKEY", "KEYS", "EVAL"):
        reply = r.eval(f"return redis.call('{name}')")
        assert isinstance(reply, ErrorReply)
        assert reply.text.startswith("ERR This Redis command is not allowed from script")


def test_a_runaway_script_fails_the_same_way_everywhere_and_keeps_its_writes() -> None:
    r = Replicas()
    for body in (
        "redis.call('SET', 'before', 'x') while true do end",
        "while true do pcall(function() while true do end end) end",  # pcall cannot swallow it
    ):
        reply = r.eval(body, instructions=200_000)
        assert isinstance(reply, ErrorReply)
        assert "budget of 200000 instructions" in reply.text
    # As in Redis, writes made before the failure stay (identically on every replica).
    assert all(m.get("before", NOW) is not None for m in r.machines)
    # Commands count against the budget too (CALL_COST each): a loop of them stops as well.
    reply = r.eval("while true do redis.call('INCR', 'n') end", instructions=200_000)
    assert isinstance(reply, ErrorReply)
    counts = {m.get("n", NOW) for m in r.machines}
    assert len(counts) == 1
    (count,) = counts
    assert count is not None
    assert 0 < int(count.value) <= 200
    reply = r.eval("local t = {} for i = 1, 1e7 do t[i] = ('x'):rep(100) end", memory=1 << 20)
    assert isinstance(reply, ErrorReply)
    assert "memory" in reply.text
    r.same_state()


def test_replies_convert_both_ways() -> None:
    r = Replicas()
    r.eval("redis.call('SET', 'v', 'abc')")
    assert r.eval("return {redis.call('GET', 'v'), redis.call('GET', 'nope')}") == [b"abc", None]
    assert r.eval("return redis.call('SET', 'v', 'x', 'XX', 'GET')") == b"abc"
    assert r.eval("return redis.call('TYPE', 'v')") == Status("string")
    assert r.eval("return redis.call('TYPE', 'v').ok") == b"string"
    assert r.eval("return redis.sha1hex('')") == sha1_hex(b"").encode()
    reply: Reply = [1, b"\x00\xff", None, Status("OK"), ErrorReply("ERR x"), [2, [b""]]]
    assert reply_from_json(reply_to_json(reply)) == reply


def test_the_script_table_is_replicated_and_in_snapshots() -> None:
    r = Replicas()
    sha = r.apply(encode(ScriptLoadCommand(NOW, b"return 1")))
    assert sha == sha1_hex(b"return 1")
    r.eval("return 2")  # EVAL caches its body too, as Redis does
    restored = CacheStateMachine()
    restored.restore(r.machines[0].snapshot())
    assert restored.script(sha) == b"return 1"
    assert restored.script(sha1_hex(b"return 2")) == b"return 2"
    assert r.apply(encode(ScriptFlushCommand(NOW))) == 2
    assert all(m.script(sha) is None for m in r.machines)
    # A machine that never ran a script writes the snapshot it always wrote.
    assert b"scripts" not in CacheStateMachine().snapshot()


def test_a_script_bound_to_a_slot_touches_only_that_slot() -> None:
    r = Replicas()
    slot = key_slot("{u}a")
    assert r.eval("return redis.call('SET', KEYS[1], 1)", ("{u}a",), slot=slot) == Status("OK")
    reply = r.eval("return redis.call('SET', 'other', 1)", ("{u}a",), slot=slot)
    assert isinstance(reply, ErrorReply)
    assert "non local key" in reply.text
    reply = r.eval("return redis.call('GET', 'x')", slot=NO_KEYS)
    assert isinstance(reply, ErrorReply)


def test_an_eval_before_format_4_is_refused_alike_everywhere() -> None:
    machines = [CacheStateMachine() for _ in range(3)]
    entry = encode(EvalCommand(NOW, b"return redis.call('SET', 'k', 1)"))
    for machine in machines:
        result = machine.apply_entry(1, entry)
        assert isinstance(result, CommandError)
        assert result.code is ErrorCode.FORMAT_NOT_ENABLED
        assert machine.get("k", NOW) is None


@pytest.mark.looptime
async def test_a_cluster_with_a_node_below_format_4_refuses_eval() -> None:
    """n3 plays the previous release (capped at format 3): EVAL is refused with the rolling-
    upgrade error naming it, and nothing reaches the log."""
    cluster = CacheCluster(3)
    cluster.caps["n3"] = 3
    async with cluster as c:
        svc = c.services[await c.leader()]
        with pytest.raises(FormatNotEnabled) as refused:
            await svc.eval(b"return 1")
        assert refused.value.needed == 4
        assert "n3" in str(refused.value)
        with pytest.raises(FormatNotEnabled):
            await svc.script_load(b"return 1")


def test_a_backup_restored_brings_its_scripts() -> None:
    from tests.cache.test_restore import restore

    source = Replicas()
    sha = source.apply(encode(ScriptLoadCommand(NOW, b"return 'from the backup'")))
    backup = source.machines[0].snapshot()
    target = Log(CacheStateMachine())
    target.apply(encode_format(4, now=NOW))
    target.apply(encode(ScriptLoadCommand(NOW, b"return 'already here'")))
    restore(target, backup, now=NOW)
    assert target.machine.script(str(sha)) == b"return 'from the backup'"
    assert target.machine.script(sha1_hex(b"return 'already here'")) is not None


def test_a_refused_restore_leaves_the_script_table_alone() -> None:
    # Before: the backup's scripts joined the table before the restore was refused.
    from raftcache.cache.commands import encode_batch
    from raftcache.cache.hashes import HashOp
    from tests.cache.test_restore import restore

    source = Log(CacheStateMachine())
    source.apply(encode_format(5, now=NOW))
    source.apply(encode(ScriptLoadCommand(NOW, b"return 'smuggled'")))
    source.apply(encode_batch([HashOp("h", "set", (b"f",), (b"v",))], now=NOW))
    target = Log(CacheStateMachine())
    target.apply(encode_format(4, now=NOW))
    result = restore(target, source.machine.snapshot(), now=NOW)
    assert isinstance(result, CommandError)  # hashes need format 5: refused alike everywhere
    assert len(target.machine.scripts) == 0


def test_a_scripts_writes_are_one_watch_entry() -> None:
    history = WatchHistory()
    machine = CacheStateMachine(watch=history)
    machine.apply_entry(1, encode_format(4, now=NOW))
    body = b"redis.call('SET', 'w:a', 1) redis.call('SET', 'w:b', 2) redis.call('DEL', 'w:a')"
    machine.apply_entry(2, encode(EvalCommand(NOW, body)))
    read = history.read(1, "w:", 10)
    assert [version for version, _ in read.entries] == [2]  # one log entry, one event
    (_, changes) = read.entries[0]
    assert {(kind, key) for kind, key, _ in changes} >= {("set", "w:b"), ("delete", "w:a")}


@pytest.mark.looptime
async def test_a_restarted_node_still_knows_loaded_scripts_and_evalsha_follows_the_leader() -> None:
    async with CacheCluster(3) as c:
        leader = await c.leader()
        sha = await c.services[leader].script_load(b"return redis.call('INCR', KEYS[1])")
        assert await c.services[leader].evalsha(sha, ["n"]) == 1
        await c.settle()
        # The leader restarts from its log (and snapshot): the table is rebuilt by applying it.
        await c.stop_node(leader)
        await c.start_node(leader)
        # Until the restarted node hears a commit index again (it may even win the election
        # and know none before its first entry commits), it applies nothing: wait for that.
        async with asyncio.timeout(10):
            while c.machines[leader].script(sha) is None:
                await asyncio.sleep(0.05)
        await c.settle()
        assert c.machines[leader].script(sha) is not None
        new_leader = await c.leader()
        assert await c.services[new_leader].evalsha(sha, ["n"]) == 2
        with pytest.raises(NoScriptError):
            await c.services[new_leader].evalsha("0" * 40)


def test_a_script_sees_hashes_as_redis_does() -> None:
    """A hash key inside a script: string reads are WRONGTYPE, TYPE says hash, EXISTS counts
    it, MGET answers nil, SET NX leaves it, EXPIRE and PERSIST keep its fields, INCR refuses."""
    from raftcache.cache.commands import encode_batch
    from raftcache.cache.entries import HASH
    from raftcache.cache.hashes import HashOp, decode_fields

    replicas = Replicas()
    replicas.apply(encode_format(6, now=NOW))
    replicas.apply(encode_batch([HashOp("h", "set", (b"f",), (b"v",))], now=NOW))
    wrong = "WRONGTYPE Operation against a key holding the wrong kind of value"
    for body in ("return redis.call('GET', 'h')", "return redis.call('INCR', 'h')"):
        reply = replicas.eval(body, ("h",))
        assert isinstance(reply, ErrorReply)
        assert reply.text.startswith(wrong)
    assert replicas.eval("return redis.call('TYPE', 'h')", ("h",)) == Status("hash")
    assert replicas.eval("return redis.call('EXISTS', 'h', 'nope')", ("h",)) == 1
    assert replicas.eval("return redis.call('MGET', 'h')", ("h",)) == [None]
    assert replicas.eval("return redis.call('SET', 'h', 'x', 'NX')", ("h",)) is None
    assert replicas.eval("return redis.call('EXPIRE', 'h', 100)", ("h",)) == 1
    assert replicas.eval("return redis.call('TTL', 'h')", ("h",)) == 100
    assert replicas.eval("return redis.call('PERSIST', 'h')", ("h",)) == 1
    replicas.same_state()
    for machine in replicas.machines:
        item = machine.get("h", NOW)
        assert item is not None
        assert item.kind == HASH
        assert item.expires_at is None
        assert decode_fields(item.value) == {b"f": b"v"}
