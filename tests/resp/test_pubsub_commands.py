"""Pub/sub on the wire, against the in-process cluster: Redis's reply shapes in RESP2 (subscribed
mode, its PING, its refusals) and RESP3 (pushes, any command allowed), RESET, PUBSUB, errors; and
the hub alone: a subscriber gets only what was committed after it subscribed, and one whose
unsent output passes the limit is disconnected while the others still receive."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis

from raftcache.resp import start_resp_server
from raftcache.resp.protocol import Push, encode
from raftcache.resp.subscriptions import PubSubHub

from .cluster import RespCluster
from .test_wire import Wire

in_cluster = pytest.mark.asyncio(loop_scope="module")


def _command(*words: bytes) -> bytes:
    return b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%b\r\n" % (len(w), w) for w in words)


async def _expect(wire: Wire, expected: bytes) -> None:
    async with asyncio.timeout(10):
        got = await wire.reader.readexactly(len(expected))
    assert got == expected


@in_cluster
async def test_resp2_subscribed_mode(resp_cluster: RespCluster) -> None:
    port = await resp_cluster.follower_port()
    wire = await Wire.open(port)
    try:
        await wire.send(_command(b"SUBSCRIBE", b"a", b"b"))
        await _expect(
            wire,
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
        )
        await wire.send(_command(b"GET", b"k"))
        await _expect(
            wire,
            b"-ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / "
            b"RESET are allowed in this context\r\n",
        )
        await wire.send(_command(b"PING") + _command(b"PING", b"hi"))
        await _expect(wire, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n*2\r\n$4\r\npong\r\n$2\r\nhi\r\n")
        await wire.send(_command(b"PSUBSCRIBE", b"a*"))
        await _expect(wire, b"*3\r\n$10\r\npsubscribe\r\n$2\r\na*\r\n:3\r\n")
        publisher = await Wire.open(await resp_cluster.leader_port())
        await publisher.send(_command(b"PUBLISH", b"a", b"hello"))
        await _expect(publisher, b":0\r\n")  # nobody subscribed on the leader itself
        publisher.writer.close()
        await _expect(
            wire,
            b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n"
            b"*4\r\n$8\r\npmessage\r\n$2\r\na*\r\n$1\r\na\r\n$5\r\nhello\r\n",
        )
        await wire.send(_command(b"UNSUBSCRIBE") + _command(b"PUNSUBSCRIBE"))
        await _expect(
            wire,
            b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:2\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n"
            b"*3\r\n$12\r\npunsubscribe\r\n$2\r\na*\r\n:0\r\n",
        )
        await wire.send(_command(b"UNSUBSCRIBE") + _command(b"PING"))  # none left: back
        await _expect(wire, b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n+PONG\r\n")
    finally:
        wire.writer.close()


@in_cluster
async def test_resp3_pushes_and_any_command_while_subscribed(resp_cluster: RespCluster) -> None:
    port = await resp_cluster.leader_port()
    wire = await Wire.open(port)
    try:
        await wire.send(_command(b"HELLO", b"3") + _command(b"PING"))
        async with asyncio.timeout(10):
            await wire.reader.readuntil(b"+PONG\r\n")  # past HELLO's map
        await wire.send(_command(b"SUBSCRIBE", b"c3") + _command(b"GET", b"missing-key"))
        await _expect(wire, b">3\r\n$9\r\nsubscribe\r\n$2\r\nc3\r\n:1\r\n_\r\n")
        await wire.send(_command(b"PUBLISH", b"c3", b"m"))
        # The reply (one subscriber here) and the push, in either order: the push is written
        # as the entry applies, the reply once the PUBLISH returns.
        expected = {b":1\r\n", b">3\r\n$7\r\nmessage\r\n$2\r\nc3\r\n$1\r\nm\r\n"}
        async with asyncio.timeout(10):
            got = await wire.reader.readexactly(sum(map(len, expected)))
        assert got in (b"".join(expected), b"".join(reversed(list(expected))))
        await wire.send(_command(b"INFO", b"stats"))
        async with asyncio.timeout(10):
            await wire.reader.readuntil(b"pubsub_channels:")
            assert int(await wire.reader.readuntil(b"\r\n")) >= 1
            await wire.reader.readuntil(b"pubsub_clients_disconnected:0\r\n")
            assert await wire.reader.readexactly(2) == b"\r\n"  # the end of the verbatim text
        await wire.send(_command(b"RESET") + _command(b"PUBSUB", b"NUMSUB", b"c3"))
        await _expect(wire, b"+RESET\r\n*2\r\n$2\r\nc3\r\n:0\r\n")  # RESET unsubscribed
    finally:
        wire.writer.close()


@in_cluster
async def test_pubsub_introspection_and_errors(resp_cluster: RespCluster) -> None:
    wire = await Wire.open(await resp_cluster.leader_port())
    try:
        await wire.send(_command(b"PUBSUB", b"NUMPAT") + _command(b"PUBSUB", b"CHANNELS", b"x*"))
        await _expect(wire, b":0\r\n*0\r\n")
        await wire.send(_command(b"PUBSUB", b"NOPE"))
        await _expect(wire, b"-ERR unknown subcommand 'NOPE'. Try PUBSUB HELP.\r\n")
        await wire.send(_command(b"PUBLISH", b"only-a-channel"))
        await _expect(wire, b"-ERR wrong number of arguments for 'publish' command\r\n")
        await wire.send(_command(b"SUBSCRIBE"))
        await _expect(wire, b"-ERR wrong number of arguments for 'subscribe' command\r\n")
        await wire.send(_command(b"MULTI") + _command(b"PUBLISH", b"c", b"m"))
        await _expect(wire, b"+OK\r\n-ERR PUBLISH cannot run inside MULTI")
        await wire.reader.readline()
        await wire.send(_command(b"DISCARD"))
        await _expect(wire, b"+OK\r\n")
    finally:
        wire.writer.close()


@dataclass(eq=False)
class _Client:
    """A connection as the hub sees it, its output collected (the ``Subscriber`` seam)."""

    id: int
    proto: int = 2
    addr: str = "test"
    unsent: int = 0
    channels: dict[bytes, int] = field(default_factory=dict)
    patterns: dict[bytes, int] = field(default_factory=dict)
    received: list[bytes] = field(default_factory=list)
    closed: bool = False

    def push(self, data: bytes) -> None:
        self.received.append(data)

    def pending_output(self) -> int:
        return self.unsent

    def close_connection(self) -> None:
        self.closed = True


def test_the_hub_delivers_what_was_committed_after_a_subscription() -> None:
    commit = [10]
    hub = PubSubHub(lambda: commit[0], output_limit=1000)
    early, late, resp3 = _Client(1), _Client(2), _Client(3, proto=3)
    hub.subscribe(early, b"c")
    hub.subscribe(resp3, b"c")
    hub.deliver(9, b"c", b"before")  # committed before they subscribed: a node catching up
    commit[0] = 12
    hub.subscribe(late, b"c")
    hub.deliver(11, b"c", b"between")
    hub.deliver(13, b"c", b"after")
    message = encode(Push((b"message", b"c", b"between")), 2)
    assert early.received == [message, encode(Push((b"message", b"c", b"after")), 2)]
    assert late.received == [encode(Push((b"message", b"c", b"after")), 2)]
    assert resp3.received[0].startswith(b">3\r\n")
    assert hub.receivers(b"c") == 3


def test_a_subscriber_over_the_output_limit_is_disconnected_and_the_others_served() -> None:
    hub = PubSubHub(lambda: 0, output_limit=1000)
    slow, fast = _Client(1, unsent=990), _Client(2)
    for client in (slow, fast):
        hub.subscribe(client, b"c")
        hub.psubscribe(client, b"*")
    hub.psubscribe(slow, b"c*")  # a pattern only the slow one holds: gone with it
    hub.deliver(1, b"c", b"x" * 20)
    assert slow.closed
    assert (slow.channels, slow.patterns, slow.received) == ({}, {}, [])
    assert len(fast.received) == 2  # the channel's message and the pattern's
    assert list(hub.patterns) == [b"*"]
    assert hub.receivers(b"c") == 2  # the slow one is gone
    assert hub.disconnected_total == 1


@in_cluster
async def test_a_subscriber_that_does_not_read_is_cut_off_at_the_limit(
    resp_cluster: RespCluster,
) -> None:
    """Real sockets: a subscriber that never reads is disconnected once its unsent output
    passes the limit; another on the same server still receives every message."""
    leader = await resp_cluster.cluster.leader()
    server = await start_resp_server(
        leader.service, leader.node, "127.0.0.1", 0, clock=time.time, pubsub_output_limit=256 * 1024
    )
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: little in flight
    stuck.setblocking(False)
    reader = await Wire.open(server.port)
    try:
        await asyncio.get_running_loop().sock_connect(stuck, ("127.0.0.1", server.port))
        stuck.send(_command(b"SUBSCRIBE", b"big"))
        await reader.send(_command(b"SUBSCRIBE", b"big"))
        await _expect(reader, b"*3\r\n$9\r\nsubscribe\r\n$3\r\nbig\r\n:1\r\n")
        hub = server.state.pubsub
        assert hub is not None
        async with asyncio.timeout(10):
            while hub.receivers(b"big") < 2:
                await asyncio.sleep(0.01)
        payload = b"x" * 65536
        sent = 0
        async with asyncio.timeout(30):
            while hub.disconnected_total == 0:
                await leader.service.publish(b"big", payload)
                sent += 1
                frame = b"*3\r\n$7\r\nmessage\r\n$3\r\nbig\r\n$65536\r\n" + payload + b"\r\n"
                await _expect(reader, frame)  # the reading subscriber keeps up
        assert hub.receivers(b"big") == 1
        assert sent * len(payload) > 256 * 1024
        closed = False
        async with asyncio.timeout(10):  # the server dropped it: EOF or reset once drained
            while not closed:
                try:
                    closed = not await asyncio.get_running_loop().sock_recv(stuck, 1 << 20)
                except ConnectionResetError:
                    closed = True
    finally:
        stuck.close()
        reader.writer.close()
        await server.stop()


@in_cluster
@pytest.mark.parametrize("where", ["leader", "follower"])
async def test_a_pipeline_of_publishes_keeps_its_order(
    resp_cluster: RespCluster, where: str
) -> None:
    """PUBLISHes of one pipeline are proposed together (forwarded in order from a follower),
    and every subscriber sees them in the pipeline's order."""
    leader, follower = await resp_cluster.leader_port(), await resp_cluster.follower_port()
    listener = await Wire.open(follower)
    publisher = aioredis.Redis(port=leader if where == "leader" else follower, socket_timeout=10)
    try:
        await listener.send(_command(b"SUBSCRIBE", b"seq"))
        await _expect(listener, b"*3\r\n$9\r\nsubscribe\r\n$3\r\nseq\r\n:1\r\n")
        async with publisher.pipeline(transaction=False) as pipe:
            for i in range(50):
                pipe.publish("seq", str(i))
            counts = await pipe.execute()
        assert counts == [0 if where == "leader" else 1] * 50  # the answering node's
        for i in range(50):
            text = str(i).encode()
            await _expect(
                listener, b"*3\r\n$7\r\nmessage\r\n$3\r\nseq\r\n$%d\r\n%b\r\n" % (len(text), text)
            )
    finally:
        listener.writer.close()
        await publisher.aclose()


@pytest.mark.looptime
async def test_a_restarted_node_knows_its_log_reaches_past_its_commit_index() -> None:
    """Why a subscription starts after the log's last entry, not the commit index: a node
    restarted while cut off from its leader has its old entries (messages it delivered before)
    on disk, but its commit index is back at its snapshot's — a subscription made then at the
    commit index would receive them all again as the node catches up."""
    from tests.raft.sim import SimCluster

    sim = SimCluster(3, seed=3)
    await sim.start()
    try:
        for i in range(5):
            await sim.propose(f"publish-{i}".encode())
        leader = await sim.wait_leader()
        follower = next(n for n in sim.ids if n != leader.node_id)
        await sim.wait_applied(5)
        await sim.crash(follower, lose_unsynced=False)
        sim.hub.isolate(follower)
        node = await sim.restart(follower)
        assert node.commit_index < 5  # not yet told by the leader
        assert node.last_log_index >= 5  # ...but every old message is in its log
    finally:
        sim.hub.heal_all()
        await sim.stop()
