"""Raw sockets against a real cluster with a client token: authentication, HELLO, QUIT, inline
commands, and malformed input (an error reply or a closed connection, never a dead server)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ExecAbortError, ResponseError

from .cluster import RespCluster, start_resp_cluster

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "s3cret"
READ_TOKEN = "r3ad"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RespCluster]:
    tmp: Path = tmp_path_factory.mktemp("resp-auth")
    cluster = await start_resp_cluster(tmp, client_token=TOKEN, client_token_ro=READ_TOKEN)
    try:
        yield cluster
    finally:
        await cluster.stop()


class Wire:
    """A raw RESP connection: send bytes, read what comes back."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Wire:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def line(self) -> bytes:
        async with asyncio.timeout(10):
            return await self.reader.readline()

    async def until_closed(self) -> bytes:
        async with asyncio.timeout(10):
            return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):  # the server may have closed first
            await self.writer.wait_closed()


async def test_commands_need_the_token(secured: RespCluster) -> None:
    port = await secured.follower_port()
    wire = await Wire.open(port)
    try:
        await wire.send(b"GET k\r\n")
        assert await wire.line() == b"-NOAUTH Authentication required.\r\n"
        await wire.send(b"HELLO 3\r\n")
        assert (await wire.line()).startswith(b"-NOAUTH HELLO must be called")
        await wire.send(b"AUTH wrong\r\n")
        assert (await wire.line()).startswith(b"-WRONGPASS")
        await wire.send(b"AUTH someone " + TOKEN.encode() + b"\r\n")
        assert (await wire.line()).startswith(b"-WRONGPASS")
        await wire.send(b"AUTH default " + TOKEN.encode() + b"\r\n")
        assert await wire.line() == b"+OK\r\n"
        await wire.send(b"SET k v\r\nGET k\r\n")  # the forwarded write presents the token too
        assert [await wire.line() for _ in range(3)] == [b"+OK\r\n", b"$1\r\n", b"v\r\n"]
        await wire.send(b"RESET\r\nGET k\r\n")
        assert await wire.line() == b"+RESET\r\n"
        assert await wire.line() == b"-NOAUTH Authentication required.\r\n"
    finally:
        await wire.close()


async def test_the_read_only_token_reads_but_never_writes(secured: RespCluster) -> None:
    writer = aioredis.Redis(port=await secured.leader_port(), password=TOKEN)
    reader = aioredis.Redis(port=await secured.follower_port(), password=READ_TOKEN)
    try:
        await writer.set("ro:k", "v")
        assert await reader.get("ro:k") == b"v"
        assert await reader.mget("ro:k", "ro:none") == [b"v", None]
        with pytest.raises(ResponseError, match=r"NOPERM|no permissions"):
            await reader.set("ro:k", "w")
        with pytest.raises(ResponseError, match=r"NOPERM|no permissions"):
            await reader.flushdb()
        # Scripts: only the read-only forms, and the machine refuses their writes.
        assert await reader.eval_ro("return redis.call('GET', KEYS[1])", 1, "ro:k") == b"v"
        with pytest.raises(ResponseError, match=r"^Write commands are not allowed from read-only"):
            await reader.eval_ro("return redis.call('SET', KEYS[1], 'w')", 1, "ro:k")
        with pytest.raises(ResponseError, match=r"NOPERM|no permissions"):
            await reader.eval("return 1", 0)
        with pytest.raises(ResponseError, match=r"NOPERM|no permissions"):
            await reader.script_load("return 1")
        assert await reader.script_exists("0" * 40) == [False]
        pipe = reader.pipeline(transaction=True)
        pipe.get("ro:k")
        pipe.delete("ro:k")
        with pytest.raises((ExecAbortError, ResponseError)):
            await pipe.execute()
        assert await writer.get("ro:k") == b"v"
    finally:
        await writer.aclose()
        await reader.aclose()


async def test_redis_py_authenticates_with_either_protocol(secured: RespCluster) -> None:
    port = await secured.follower_port()
    for protocol in (2, 3):
        good = aioredis.Redis(port=port, password=TOKEN, protocol=protocol)
        # No retries: redis-py would otherwise back off for seconds before giving up.
        bad = aioredis.Redis(
            port=port, password="nope", protocol=protocol, retry=Retry(NoBackoff(), 0)
        )
        try:
            assert await good.set(f"auth:{protocol}", "x") is True
            assert await good.get(f"auth:{protocol}") == b"x"
            with pytest.raises((AuthenticationError, ResponseError)):
                await bad.ping()
        finally:
            await good.aclose()
            await bad.aclose()


async def test_hello_switches_protocol_and_quit_closes(secured: RespCluster) -> None:
    wire = await Wire.open(await secured.leader_port())
    try:
        await wire.send(b"HELLO 3 AUTH default " + TOKEN.encode() + b" SETNAME me\r\nPING\r\n")
        hello = [await wire.line()]
        while hello[-1] != b"+PONG\r\n":
            hello.append(await wire.line())
        assert hello[0] == b"%9\r\n"  # a RESP3 map: the reply is already in RESP3
        assert b"proto\r\n" in hello
        assert hello[hello.index(b"proto\r\n") + 1] == b":3\r\n"
        await wire.send(b"GET nothing-here\r\nHELLO 4\r\nCLIENT GETNAME\r\nQUIT\r\nPING\r\n")
        assert await wire.line() == b"_\r\n"  # RESP3 null
        assert await wire.line() == b"-NOPROTO unsupported protocol version\r\n"
        assert [await wire.line(), await wire.line()] == [b"$2\r\n", b"me\r\n"]
        assert await wire.until_closed() == b"+OK\r\n"  # nothing runs after QUIT
    finally:
        await wire.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"*1\r\n$-5\r\n",
        b"*abc\r\n",
        b"*2\r\n$3\r\nGET\r\n:1\r\n",
        b"*1\r\n$3\r\nGETxx",
        b'SET "open\r\n',
        b"*1\r\n$99999999999\r\n",
    ],
)
async def test_malformed_requests_get_an_error_then_a_close(
    secured: RespCluster, garbage: bytes
) -> None:
    port = await secured.leader_port()
    wire = await Wire.open(port)
    try:
        await wire.send(b"PING\r\n" + garbage)
        rest = await wire.until_closed()
        assert rest.startswith(b"-NOAUTH")  # the PING before the garbage still got its reply
        assert b"-ERR Protocol error" in rest
    finally:
        await wire.close()
    await assert_serving(port)


async def assert_serving(port: int) -> None:
    client = aioredis.Redis(port=port, password=TOKEN, socket_timeout=10)
    try:
        assert await client.ping() is True
    finally:
        await client.aclose()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(garbage=st.binary(min_size=1, max_size=200))
async def test_random_bytes_never_break_the_server(secured: RespCluster, garbage: bytes) -> None:
    port = secured.resp[0].port
    wire = await Wire.open(port)
    try:
        await wire.send(garbage)
        wire.writer.write_eof()
        await wire.until_closed()  # an error, some replies, or a close: all fine
    except ConnectionError:
        pass
    finally:
        await wire.close()
    await assert_serving(port)


async def test_a_huge_pipeline_in_small_pieces(secured: RespCluster) -> None:
    wire = await Wire.open(await secured.leader_port())
    try:
        data = b"AUTH " + TOKEN.encode() + b"\r\n" + b"*2\r\n$4\r\nECHO\r\n$3\r\nabc\r\n" * 2000
        for start in range(0, len(data), 1000):
            await wire.send(data[start : start + 1000])
        assert await wire.line() == b"+OK\r\n"
        for _ in range(2000):
            assert [await wire.line(), await wire.line()] == [b"$3\r\n", b"abc\r\n"]
    finally:
        await wire.close()
