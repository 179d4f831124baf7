"""Pub/sub on real ``raftcache serve`` processes with redis-py: a message published on any node
reaches the subscribers of every node in one order per channel — the log's — channel and
pattern subscriptions alike, and still after the leader is SIGKILLed mid-stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from tests.e2e.nodes import WAIT_S, ProcessCluster, wait_for_leader

FAST = ["--election-timeout-min", "0.3", "--election-timeout-max", "0.6"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[ProcessCluster, dict[str, int]]]:
    nodes = ProcessCluster(tmp_path, 3, FAST)
    plain = nodes.give_resp_ports()
    with nodes:
        nodes.start_all()
        yield nodes, plain


async def _leader(nodes: ProcessCluster) -> str:
    async with aiohttp.ClientSession() as http:
        return (await wait_for_leader(nodes, http)).node_id


async def _subscriber(
    port: int, *channels: str, patterns: tuple[str, ...] = (), protocol: int = 2
) -> PubSub:
    client = aioredis.Redis(port=port, socket_timeout=10, protocol=protocol)
    pubsub = client.pubsub()
    if channels:
        await pubsub.subscribe(*channels)
    if patterns:
        await pubsub.psubscribe(*patterns)
    for _ in range(len(channels) + len(patterns)):  # the confirmations
        confirmation = await pubsub.get_message(timeout=WAIT_S)
        assert confirmation is not None
        assert confirmation["type"] in ("subscribe", "psubscribe")
    return pubsub


async def _drain(pubsub: PubSub, count: int) -> list[tuple[str, bytes, bytes]]:
    """The next ``count`` messages: (type, channel, data)."""
    got: list[tuple[str, bytes, bytes]] = []
    deadline = time.monotonic() + WAIT_S
    while len(got) < count and time.monotonic() < deadline:
        message: Any = await pubsub.get_message(timeout=1.0)
        if message is not None:
            got.append((message["type"], message["channel"], message["data"]))
    return got


async def _publishes(nodes: ProcessCluster, plain: dict[str, int]) -> None:
    leader = await _leader(nodes)
    follower = next(n for n in nodes.nodes if n != leader)
    # One subscriber per node, the last one speaking RESP3 (its messages arrive as pushes).
    subscribers = [
        await _subscriber(plain[n], "news", "other", patterns=("n*",), protocol=2 + (i == 2))
        for i, n in enumerate(nodes.nodes)
    ]
    publishers = [aioredis.Redis(port=plain[n], socket_timeout=10) for n in (leader, follower)]
    try:
        # Two nodes publish at once: each message is one log entry, in one order everywhere.
        async def publish(client: aioredis.Redis, tag: str) -> list[int]:
            return [await client.publish("news", f"{tag}{i}") for i in range(20)]

        counts = await asyncio.gather(
            *(publish(c, t) for c, t in zip(publishers, "ab", strict=True))
        )
        # The answer counts the answering node's subscriptions: news and n* on one connection.
        assert all(n == 2 for run in counts for n in run)
        assert await publishers[1].publish("other", "x") == 1
        assert await publishers[0].publish("nobody", "y") == 1  # n* only
        seen = [await _drain(s, 20 * 2 * 2 + 2) for s in subscribers]
        assert seen[0] == seen[1] == seen[2]  # every node: one order
        news = [data for kind, channel, data in seen[0] if kind == "message" and channel == b"news"]
        for tag in "ab":  # each publisher's own order is kept
            assert [d for d in news if d.startswith(tag.encode())] == [
                f"{tag}{i}".encode() for i in range(20)
            ]
        assert seen[0][-2:] == [("message", b"other", b"x"), ("pmessage", b"nobody", b"y")]
        first = seen[0][:2]  # a message matching the channel and the pattern: twice
        assert [kind for kind, _, _ in first] == ["message", "pmessage"]
        numsub = await publishers[0].pubsub_numsub("news", "nobody")
        assert numsub == [(b"news", 1), (b"nobody", 0)]  # this node's subscribers
        assert await publishers[0].pubsub_numpat() == 1
        assert sorted(await publishers[0].pubsub_channels()) == [b"news", b"other"]
    finally:
        for s in subscribers:
            await s.aclose()  # type: ignore[no-untyped-call]
        for p in publishers:
            await p.aclose()


async def _through_a_leader_kill(nodes: ProcessCluster, plain: dict[str, int]) -> None:
    leader = await _leader(nodes)
    survivors = [n for n in nodes.nodes if n != leader]
    subscribers = [await _subscriber(plain[n], "feed") for n in survivors]
    publishers = {n: aioredis.Redis(port=plain[n], socket_timeout=5) for n in survivors}
    acknowledged: list[bytes] = []
    attempts = 0

    async def publish(node: str, count: int) -> None:
        nonlocal attempts
        done = 0
        deadline = time.monotonic() + WAIT_S
        while done < count:
            attempts += 1
            message = f"{node}-{attempts}".encode()  # every attempt its own message
            try:
                await publishers[node].publish("feed", message)
            except aioredis.RedisError:  # TRYAGAIN, INDETERMINATE during the election
                assert time.monotonic() < deadline, "no leader came back"
                await asyncio.sleep(0.05)
                continue
            acknowledged.append(message)
            done += 1

    try:
        await asyncio.gather(*(publish(n, 10) for n in survivors))
        nodes.kill(leader)  # mid-stream: both survivors go on publishing through it
        await asyncio.gather(*(publish(n, 10) for n in survivors))
        assert len(acknowledged) == 40
        # A survivor applies every committed entry: it delivers every acknowledged message, in
        # the log's order, which is the same on both (a message whose answer was lost may be
        # there too — it was committed after all — or not, alike on both).
        seen = []
        for subscriber in subscribers:
            got = await _drain(subscriber, len(acknowledged))
            while (more := await subscriber.get_message(timeout=0.5)) is not None:
                got.append((more["type"], more["channel"], more["data"]))
            seen.append([data for _, _, data in got])
        assert seen[0] == seen[1]
        assert set(acknowledged) <= set(seen[0])
        assert len(set(seen[0])) == len(seen[0])
        for node in survivors:  # a publisher's acknowledged messages keep their order
            mine = [m for m in seen[0] if m in acknowledged and m.startswith(node.encode())]
            assert mine == [m for m in acknowledged if m.startswith(node.encode())]
    finally:
        for s in subscribers:
            await s.aclose()  # type: ignore[no-untyped-call]
        for p in publishers.values():
            await p.aclose()


def test_every_node_delivers_in_one_order_and_still_after_a_leader_kill(
    cluster: tuple[ProcessCluster, dict[str, int]],
) -> None:
    """One cluster for both (a process start costs seconds): first every node delivers every
    message in one order, then the leader dies in the middle of a stream."""
    asyncio.run(_publishes(*cluster))
    asyncio.run(_through_a_leader_kill(*cluster))
