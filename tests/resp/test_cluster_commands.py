"""CLUSTER KEYSLOT and HELP: the slot a store reports is Redis Cluster's, checked against
redis-py's own CRC16 over a real node, and bad calls get Redis's error texts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import redis.crc
from redis.exceptions import ResponseError

from raftcache.resp.args import Limits
from raftcache.resp.commands import arity_ok, lookup

from .cluster import RespCluster


def run(*words: bytes) -> Any:
    spec = lookup(words[0])
    assert spec is not None
    if not arity_ok(spec, len(words)):
        return "arity"
    call = spec.parse(list(words[1:]), Limits())
    return call.run_server(None)  # type: ignore[arg-type,unused-ignore]  # CLUSTER reads no state


def test_keyslot_hashes_the_raw_bytes_and_the_hash_tag() -> None:
    assert run(b"CLUSTER", b"KEYSLOT", b"somekey") == 11058
    assert run(b"cluster", b"keyslot", b"{user1000}.following") == redis.crc.key_slot(b"user1000")
    assert run(b"CLUSTER", b"KEYSLOT", b"\xff\xfe") == redis.crc.key_slot(b"\xff\xfe")


def test_bad_cluster_calls_get_redis_errors() -> None:
    assert run(b"CLUSTER") == "arity"
    assert "wrong number of arguments for 'cluster|keyslot'" in str(
        run(b"CLUSTER", b"KEYSLOT", b"a", b"b")
    )
    assert "wrong number of arguments for 'cluster|keyslot'" in str(run(b"CLUSTER", b"KEYSLOT"))
    assert "unknown subcommand 'NOPE'. Try CLUSTER HELP." in str(run(b"CLUSTER", b"nope"))
    assert run(b"CLUSTER", b"HELP")[0].startswith(b"CLUSTER <subcommand>")


@pytest_asyncio.fixture(loop_scope="module")
async def follower(resp_cluster: RespCluster) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=await resp_cluster.follower_port(), socket_timeout=10)
    yield client
    await client.aclose()


@pytest.mark.asyncio(loop_scope="module")
async def test_redis_py_reads_the_slot_from_any_node(follower: aioredis.Redis) -> None:
    for key in ["somekey", "foo{hash_tag}", "user:{42}:cart", "é"]:
        slot = await follower.execute_command("CLUSTER", "KEYSLOT", key)  # type: ignore[no-untyped-call]
        assert slot == redis.crc.key_slot(key.encode())
    with pytest.raises(ResponseError, match="wrong number of arguments"):
        await follower.execute_command("CLUSTER", "KEYSLOT")  # type: ignore[no-untyped-call]
    assert await follower.ping()  # an error never closes the connection
