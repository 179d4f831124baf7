"""What a Redis client is told when a command fails: TRYAGAIN only when nothing happened.

redis-py's ``RedisCluster`` retries ``TRYAGAIN`` by itself, so a write that may already have been
appended (the node stopped with it pending, the leader answered something unexpected) must be
``INDETERMINATE``, or an INCR runs twice.
"""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest

from raftcache.cache.errors import NoScriptError
from raftcache.cache.formats import CommandVersionNotEnabledError
from raftcache.network.hub import InMemoryHub
from raftcache.network.memory import InMemoryNetwork
from raftcache.protocol.messages import AppendEntriesRequest, AppendEntriesResponse
from raftcache.raft.core import Role
from raftcache.raft.errors import NodeStoppedError, StoppedAfterAppendError
from raftcache.raft.node import RaftNode
from raftcache.resp.errors import IndeterminateWriteError, UnavailableError, reply_for
from raftcache.resp.leader import _raise_for
from raftcache.storage.memory import MemoryStorage
from tests.raft.sim import FAST, ListMachine


async def test_a_replicated_write_of_a_stopping_leader_is_indeterminate() -> None:
    """The leader appends and replicates an INCR, never hears the acknowledgements, and stops
    (SIGTERM, a disk error): the followers commit the INCR without it, so the client must not
    be told "nothing happened"."""
    hub = InMemoryHub()
    ids = ["n1", "n2", "n3"]
    nets = {i: InMemoryNetwork(i, hub=hub, seed=3) for i in ids}
    machines = {i: ListMachine() for i in ids}
    nodes = {
        i: RaftNode(i, ids, nets[i], MemoryStorage(), machines[i], FAST, rng=random.Random(k))
        for k, i in enumerate(ids)
    }
    for i in ids:
        await nets[i].start()
        await nodes[i].start()
    try:
        async with asyncio.timeout(5):
            while not any(n.role is Role.LEADER for n in nodes.values()):
                await asyncio.sleep(0.01)
        leader = next(n for n in nodes.values() if n.role is Role.LEADER)
        await leader.propose(b"warm-up")
        net = nets[leader.node_id]
        deliver = net.send_append_entries

        async def replies_lost(target: str, req: AppendEntriesRequest) -> AppendEntriesResponse:
            if req.entries:  # the followers get it; the leader never hears back
                await deliver(target, req)
                await asyncio.Event().wait()
            return await deliver(target, req)

        net.send_append_entries = replies_lost  # type: ignore[method-assign]
        before = leader.core.log.last_index()
        write = asyncio.create_task(leader.propose(b"INCR counter"))
        others = [n for n in nodes.values() if n is not leader]
        async with asyncio.timeout(5):  # appended on both followers, not known committed
            while not all(n.core.log.last_index() > before for n in others):
                await asyncio.sleep(0.005)
        assert not write.done()
        await leader.stop()
        with pytest.raises(NodeStoppedError) as info:
            await write
        assert isinstance(info.value, StoppedAfterAppendError)
        answer = reply_for(info.value, is_write=True).line
        async with asyncio.timeout(5):
            while not any(b"INCR counter" in machines[n.node_id].commands() for n in others):
                await asyncio.sleep(0.01)
        assert answer.startswith("INDETERMINATE "), answer  # and the write was applied
    finally:
        for i in ids:
            await nodes[i].stop()
            await nets[i].stop()


def test_tryagain_only_when_the_write_certainly_did_not_happen() -> None:
    appended = StoppedAfterAppendError("node stopped")
    assert reply_for(appended, is_write=True).line.startswith("INDETERMINATE ")
    assert reply_for(appended, is_write=False).line.startswith("TRYAGAIN ")
    # Refused before anything was appended: a retry is safe.
    assert reply_for(NodeStoppedError("not running"), is_write=True).line.startswith("TRYAGAIN ")
    no_leader = UnavailableError("no leader known")
    assert reply_for(no_leader, is_write=True).line.startswith("TRYAGAIN ")


@pytest.mark.parametrize("status", [500, 502, 418])
def test_an_unexpected_answer_of_the_leader_to_a_write_is_indeterminate(status: int) -> None:
    body = orjson.dumps({"error": "internal error: KeyError"})
    with pytest.raises(IndeterminateWriteError):
        _raise_for(status, body, write=True)
    with pytest.raises(UnavailableError):
        _raise_for(status, body, write=False)


def test_the_leaders_503_and_504_keep_their_meaning() -> None:
    with pytest.raises(UnavailableError):  # the API's rule: a 503 means nothing happened
        _raise_for(503, orjson.dumps({"error": "node is stopping"}), write=True)
    with pytest.raises(IndeterminateWriteError):
        _raise_for(504, orjson.dumps({"error": "node is stopping: ..."}), write=True)


def test_scripts_refused_during_a_rolling_upgrade_and_unknown_shas_answer_redis_texts() -> None:
    refused = CommandVersionNotEnabledError(4, 3, {"n1": 4, "n3": 3})
    line = reply_for(refused, is_write=True).line
    assert line.startswith("ERR this command needs command format 4, the cluster runs format 3")
    assert "n3" in line
    assert reply_for(NoScriptError(), is_write=True).line == (
        "NOSCRIPT No matching script. Please use EVAL."
    )
