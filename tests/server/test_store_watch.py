"""A watch on a prefix spans every group of a sharded cluster (``routes_watch_groups``), over
real sockets: in-process stores of G = 4 groups, each one ``Store`` over one ``HttpNetwork``
mounted on its application (as ``raftcache serve --groups`` runs it).

With three stores (RF 3) every store hosts every group: the merged stream reads each group's
local history. With four, each store lacks one group, which its merged stream relays from
another store. Each case checks what the issue asks: writes to keys of every group are seen;
a stream cut mid-way and resumed from its last id (a token covering every group), on any store,
delivers every key's changes exactly once and in order while writes go on; a store a relay
reads from stopping moves the relay to another replica with nothing lost; bad tokens are a 400
naming them, a start older than a group's history the one-group watch's 410. The client's
``watch`` and ``raftcache watch`` resume with these tokens too.
"""

from __future__ import annotations

import asyncio
import base64
import re
import sys
from collections import defaultdict
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.watch import WatchHistory
from raftcache.client import AsyncClient, WatchCompactedError
from raftcache.client.watch import check_from_version
from raftcache.client.watch_sse import SseMessage, SseParser
from raftcache.server.errors import ApiError
from raftcache.server.routes_watch import WatchSettings
from raftcache.server.routes_watch_groups import format_token, parse_token
from raftcache.slots import key_group
from raftcache.store import group_id
from tests.store.stores_http import (
    RunningStores,
    StoreServer,
    bootstrap_placement,
    keys_of,
    start_stores,
    store_ids,
)

GROUPS = 4
GUARD_S = 15.0  # a hang guard only
TOKEN = re.compile(r"g0:\d+,g1:\d+,g2:\d+,g3:\d+")


class Stores(RunningStores):
    def lacking(self) -> tuple[str, str]:
        """A store and the group it holds no replica of."""
        return next((sid, gid) for sid, r in self.running.items() for gid in sorted(r.store.remote))

    async def put(self, key: str, value: str, via: str) -> int:
        async with self.session.put(f"{self.url(via)}/v1/keys/{key}", data=value) as resp:
            assert resp.status == 200, await resp.text()
            return int((await resp.json())["version"])


async def _start(count: int) -> Stores:
    ids = store_ids(count)
    placement = bootstrap_placement(ids, GROUPS)
    _, running = await start_stores(
        ids,
        groups=GROUPS,
        placement=placement,
        machine=lambda gid: CacheStateMachine(watch=WatchHistory()),
        watch=WatchSettings(heartbeat_s=0.2, relay_timeout_s=1.0),
    )
    stores = Stores(GROUPS, running, aiohttp.ClientSession(), placement)
    await stores.settled()
    return stores


async def _stop_one(r: StoreServer) -> None:
    await r.stop(drain_s=5.0)  # as a stopping store does: ends its watch streams


async def _stop(stores: Stores) -> None:
    await stores.stop(drain_s=5.0)


@pytest.fixture(params=[3, 4], ids=["3-stores", "4-stores"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    started = await _start(request.param)
    yield started
    await _stop(started)


@pytest.fixture
async def four() -> AsyncIterator[Stores]:
    started = await _start(4)
    yield started
    await _stop(started)


def keys_in(group: int, count: int, prefix: str) -> list[str]:
    return keys_of(group, GROUPS, count, prefix)


def versions_of(token: str) -> dict[str, int]:
    assert TOKEN.fullmatch(token), token
    return {part.split(":")[0]: int(part.split(":")[1]) for part in token.split(",")}


class Stream:
    """One SSE stream, read message by message (heartbeat comments skipped)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.parser = SseParser()
        self.messages: list[SseMessage] = []

    async def next(self) -> SseMessage:
        async with asyncio.timeout(GUARD_S):
            while not self.messages:
                chunk = await self.response.content.readany()
                assert chunk, "the stream ended"
                self.messages.extend(self.parser.feed(chunk))
        return self.messages.pop(0)

    def close(self) -> None:
        self.response.close()


async def open_watch(stores: Stores, via: str, **params: str) -> Stream:
    headers = {}
    if "last_event_id" in params:
        headers["Last-Event-ID"] = params.pop("last_event_id")
    response = await stores.session.get(
        f"{stores.url(via)}/v1/watch", params=params, headers=headers
    )
    assert response.status == 200, await response.text()
    assert response.content_type == "text/event-stream"
    return Stream(response)


async def test_a_prefix_watch_sees_every_group(stores: Stores) -> None:
    via = stores.lacking()[0] if len(stores.running) == 4 else "s2"
    stream = await open_watch(stores, via, prefix="w:")
    hello = await stream.next()
    assert hello.event == "progress"
    assert hello.id is not None
    start = versions_of(hello.id)
    assert orjson.loads(hello.data) == {"token": hello.id, "heartbeat_s": 0.2}
    ids = list(stores.running)
    keys = [k for g in range(GROUPS) for k in keys_in(g, 2, "w:")]
    written = {}
    for i, key in enumerate(keys):
        written[key] = await stores.put(key, f"v{i}", ids[i % len(ids)])
    await stores.put("elsewhere", "x", ids[0])
    seen: dict[str, int] = {}
    last = dict(start)
    while len(seen) < len(keys):
        message = await stream.next()
        if message.event != "change":
            continue
        assert message.id is not None
        token = versions_of(message.id)
        data = orjson.loads(message.data)
        group = data["group"]
        assert token[group] == data["version"] > last[group]  # each group in its log order
        assert all(token[g] >= v for g, v in last.items())
        last = token
        for change in data["changes"]:
            assert group == group_id(key_group(change["key"], GROUPS))
            seen[change["key"]] = data["version"]
    assert seen == written
    stream.close()


async def test_resumed_from_its_last_token_every_change_arrives_once(stores: Stores) -> None:
    """Cut the stream again and again while writes go on, and resume it from its last id on
    another store each time: every key's changes arrive exactly once, in order."""
    ids = list(stores.running)
    keys = [k for g in range(GROUPS) for k in keys_in(g, 2, "r:")]
    rounds = 10
    acked: dict[str, list[tuple[int, str]]] = {key: [] for key in keys}
    first = stores.lacking()[0] if len(ids) == 4 else "s1"
    stream = await open_watch(stores, first, prefix="r:")
    hello = await stream.next()
    assert hello.id is not None
    last_id = hello.id

    async def writer(key: str, offset: int) -> None:
        for r in range(rounds):
            value = f"{r}"
            acked[key].append((await stores.put(key, value, ids[(r + offset) % len(ids)]), value))

    writing = asyncio.gather(*(writer(key, i) for i, key in enumerate(keys)))
    received: dict[str, list[tuple[int, str]]] = defaultdict(list)
    cuts = 0
    via = ids.index(first)
    since_cut = 0
    try:
        async with asyncio.timeout(GUARD_S):
            while any(len(received[k]) < rounds for k in keys):
                if since_cut >= 7:  # cut after a few events, resume on the next store
                    stream.close()
                    cuts += 1
                    via += 1
                    how = "last_event_id" if cuts % 2 else "from_version"
                    stream = await open_watch(
                        stores, ids[via % len(ids)], prefix="r:", **{how: last_id}
                    )
                    since_cut = 0
                message = await stream.next()
                assert message.id is not None
                token = versions_of(message.id)
                before = versions_of(last_id)
                assert all(token[g] >= v for g, v in before.items()), (last_id, message.id)
                if message.event == "change":
                    data = orjson.loads(message.data)
                    assert token[data["group"]] == data["version"] > before[data["group"]]
                    for change in data["changes"]:
                        value = base64.b64decode(change["value"]).decode()
                        received[change["key"]].append((data["version"], value))
                    since_cut += 1
                last_id = message.id
    finally:
        await writing
        stream.close()
    assert cuts >= 5
    for key in keys:
        assert received[key] == acked[key], key  # no gap, no duplicate, in order


async def test_a_relay_moves_to_another_replica_when_its_store_stops(four: Stores) -> None:
    via, gid = four.lacking()
    stream = await open_watch(four, via, prefix="f:")
    hello = await stream.next()
    assert hello.id is not None
    # The store the relay of ``gid`` reads from: the one with a stream open on that group.
    source = None
    async with asyncio.timeout(GUARD_S):
        while source is None:
            for sid in four.running:
                async with four.session.get(f"{four.url(sid)}/metrics") as resp:
                    text = await resp.text()
                if f'raftcache_watch_streams{{group="{gid}"}} 1.0' in text:
                    source = sid
            await asyncio.sleep(0.02)
    assert source != via
    keys = [k for g in range(GROUPS) for k in keys_in(g, 2, "f:")]
    acked: dict[str, list[int]] = defaultdict(list)
    for key in keys:
        acked[key].append(await four.put(key, "before", via))
    await _stop_one(four.running.pop(source))
    await four.settled()
    for key in keys:
        acked[key].append(await four.put(key, "after", via))
    received: dict[str, list[int]] = defaultdict(list)
    while any(len(received[k]) < 2 for k in keys):
        message = await stream.next()
        if message.event == "change":
            data = orjson.loads(message.data)
            for change in data["changes"]:
                received[change["key"]].append(data["version"])
    assert dict(received) == dict(acked)
    stream.close()


async def test_bad_tokens_are_a_400_naming_them(four: Stores) -> None:
    s, url = four.session, four.url("s1")
    bad: list[tuple[dict[str, str], dict[str, str], str]] = [
        ({"from_version": "g0:1,g1:x"}, {}, "from_version must be a resume token"),
        ({"from_version": "hello"}, {}, "from_version must be a resume token"),
        ({}, {"Last-Event-ID": "g0:1;g1:2"}, "Last-Event-ID must be a resume token"),
        ({"from_version": "g0:1,g1:2,g2:3"}, {}, "another cluster: it names 3 groups"),
        ({"from_version": "g0:1,g1:2,g2:3,g3:4,g4:5"}, {}, "another cluster: it names 5"),
        ({"from_version": "g0:1,g1:2,g2:3,g7:4"}, {}, "another cluster"),
        ({"from_version": "g0:1,g0:2,g2:3,g3:4"}, {}, "names group g0 twice"),
        ({"from_version": "g0:1,g1:2,g2:3,g3:4", "group": "g1"}, {}, "non-negative integer"),
    ]
    for params, headers, expected in bad:
        async with s.get(f"{url}/v1/watch", params=params, headers=headers) as resp:
            assert resp.status == 400, (params, headers, await resp.text())
            error = str((await resp.json())["error"])
            assert expected in error, (params, headers, error)
    # A plain version is every group from it; a good token too.
    for start in ("0", "g0:0,g1:0,g2:0,g3:0"):
        stream = await open_watch(four, "s1", from_version=start)
        hello = await stream.next()
        assert hello.id == "g0:0,g1:0,g2:0,g3:0"
        stream.close()


async def test_a_start_older_than_a_groups_history_is_a_410(four: Stores) -> None:
    via, gid = four.lacking()
    key = keys_in(int(gid[1:]), 1, "c:")[0]
    await four.put(key, "x", via)
    replicas = [r.store.replicas[gid] for r in four.running.values() if gid in r.store.replicas]
    async with asyncio.timeout(GUARD_S):  # every replica applied the write before the reset:
        # a replica resetting before it applied anything would keep the write in its history
        while len({r.node.last_applied for r in replicas}) > 1 or not replicas[0].node.last_applied:
            await asyncio.sleep(0.01)
    for r in four.running.values():  # as a snapshot installed on every replica would
        replica = r.store.replicas.get(gid)
        if replica is not None:
            history = replica.machine.watch_history
            assert history is not None
            history.reset(history.last_index)
    hosting = next(sid for sid in four.running if gid in four.running[sid].store.replicas)
    for where in (via, hosting):  # relayed from another store, and from the local history
        async with (
            asyncio.timeout(GUARD_S),
            four.session.get(
                f"{four.url(where)}/v1/watch", params={"prefix": "c:", "from_version": "0"}
            ) as resp,
        ):
            assert resp.status == 410, (where, resp.status, await resp.content.read(300))
            body = await resp.json()
        assert set(body) == {"error", "version", "oldest_version", "group"}
        assert body["group"] == gid
        assert gid in body["error"]
        restart = versions_of(body["version"])
        assert restart[gid] == body["oldest_version"] > 0
        # Re-read, then watch from the token it names: accepted.
        async with asyncio.timeout(GUARD_S):
            stream = await open_watch(four, where, prefix="c:", from_version=body["version"])
            hello = await stream.next()
        assert hello.id == body["version"]
        stream.close()
    # The client raises it with the token and the group.
    async with AsyncClient([four.url(via)]) as client:
        watch = client.watch("c:", from_version=0)
        with pytest.raises(WatchCompactedError) as raised:
            await asyncio.wait_for(anext(watch), GUARD_S)
        await watch.aclose()
    assert (raised.value.status, raised.value.group) == (410, gid)
    assert versions_of(raised.value.token)[gid] == raised.value.oldest_version


async def test_the_client_resumes_with_tokens_across_a_store_stopping(four: Stores) -> None:
    keys = [k for g in range(GROUPS) for k in keys_in(g, 1, "cl:")]
    urls = [four.url(sid) for sid in four.running]
    async with AsyncClient(urls) as client:
        watch = client.watch("cl:")
        first = asyncio.ensure_future(anext(watch))
        async with asyncio.timeout(GUARD_S):
            while watch.token is None:  # the stream's first event names its start
                await asyncio.sleep(0.01)
        assert watch.version is None
        start = watch.token
        versions_of(start)
        acked: dict[str, list[int]] = defaultdict(list)
        for key in keys:
            acked[key].append(await four.put(key, "1", "s1"))
        events = [await asyncio.wait_for(first, GUARD_S)]
        while len(events) < len(keys):
            events.append(await asyncio.wait_for(anext(watch), GUARD_S))
        assert {e.group for e in events} == {group_id(g) for g in range(GROUPS)}
        # Stop the store it streams from: it resumes on another from its token.
        connected = watch.endpoint
        sid = next(s for s, r in four.running.items() if r.url == connected)
        await _stop_one(four.running.pop(sid))
        await four.settled()
        via = next(iter(four.running))
        for key in keys:
            acked[key].append(await four.put(key, "2", via))
        while len(events) < 2 * len(keys):
            events.append(await asyncio.wait_for(anext(watch), GUARD_S))
        assert watch.connections >= 2
        received: dict[str, list[int]] = defaultdict(list)
        for event in events:
            assert event.group == group_id(key_group(event.key, GROUPS))
            received[event.key].append(event.version)
        assert dict(received) == dict(acked)
        token = watch.token
        assert token is not None
        await watch.aclose()
        # A new watch from the saved token sees only what came after it.
        later = await four.put(keys[0], "3", via)
        async with client.watch("cl:", from_version=token) as again:
            event = await asyncio.wait_for(anext(again), GUARD_S)
        assert (event.key, event.value, event.version) == (keys[0], b"3", later)
        # And from the start token: everything again, in each group's order.
        async with client.watch("cl:", from_version=start) as replay:
            replayed = [await asyncio.wait_for(anext(replay), GUARD_S) for _ in range(9)]
        assert [e.version for e in replayed if e.key == keys[0]] == [*acked[keys[0]], later]


async def test_the_cli_prints_every_groups_changes_from_a_token(stores: Stores) -> None:
    stream = await open_watch(stores, "s1", prefix="cli:")
    token = (await stream.next()).id
    stream.close()
    assert token is not None
    keys = [k for g in range(GROUPS) for k in keys_in(g, 1, "cli:")]
    for key in keys:
        await stores.put(key, key, "s2")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "raftcache", "watch", "cli:", "--from-version", token,
        "--count", str(len(keys)), "--format", "json", "--endpoints", stores.url("s3"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), GUARD_S)
    assert proc.returncode == 0, err.decode()
    lines = [orjson.loads(line) for line in out.decode().splitlines()]
    assert sorted(line["key"] for line in lines) == sorted(keys)
    for line in lines:
        assert line["group"] == group_id(key_group(line["key"], GROUPS))
        assert line["value"] == line["key"]


def test_tokens_round_trip_and_refuse_what_is_not_one() -> None:
    assert parse_token("g0:5,g1:0,g2:17,g3:9", "from_version", 4) == [5, 0, 17, 9]
    assert format_token([5, 0, 17, 9]) == "g0:5,g1:0,g2:17,g3:9"
    assert parse_token("12", "from_version", 4) == 12
    assert parse_token(None, "from_version", 4) is None
    assert parse_token("", "Last-Event-ID", 4) is None
    for bad in ("g0:5,g1:0,g2:17", "g0:5,,g2:1,g3:1", "g0:-1,g1:0,g2:0,g3:0", "g01:1", " 5"):
        with pytest.raises(ApiError) as refused:
            parse_token(bad, "from_version", 4)
        assert refused.value.status == 400
        assert "from_version" in refused.value.message
    assert check_from_version("g0:1,g1:2") == "g0:1,g1:2"
    assert check_from_version("7") == 7
    for wrong in ("", "g0:1 g1:2", "x\n", -1):
        with pytest.raises(ValueError, match="from_version must be"):
            check_from_version(wrong)


async def test_a_replica_leaving_ends_the_streams_that_read_it(four: Stores) -> None:
    """A store losing its replica of a group (moved away) ends the streams that read that
    replica's history; resumed, the merged stream relays the group from another store."""
    via = "s1"
    gid = sorted(four.running[via].store.replicas)[0]
    merged = await open_watch(four, via, prefix="m:")
    one = await open_watch(four, via, prefix="m:", group=gid)
    hello = await merged.next()
    assert hello.id is not None
    await one.next()
    keys = [k for g in range(GROUPS) for k in keys_in(g, 1, "m:")]

    async def write_all(value: str) -> dict[str, int]:
        await four.settled()
        written = {}
        for key in keys:
            leader = four.leader_of(group_id(key_group(key, GROUPS)))
            assert leader is not None
            written[key] = await four.put(key, value, leader)
        return written

    acked = [await write_all("1")]
    received: dict[str, list[int]] = defaultdict(list)
    last_id = hello.id
    while len(received) < len(keys):
        message = await merged.next()
        assert message.id is not None
        last_id = message.id
        if message.event == "change":
            data = orjson.loads(message.data)
            received[data["changes"][0]["key"]].append(data["version"])
    await four.running[via].store.remove_replica(gid)
    for stream in (merged, one):  # both end (their clients would resume elsewhere)
        async with asyncio.timeout(GUARD_S):
            while await stream.response.content.readany():
                pass
        stream.close()
    acked.append(await write_all("2"))
    async with four.session.get(
        f"{four.url(via)}/v1/watch", params={"group": gid, "prefix": "m:"}
    ) as resp:
        assert resp.status == 404  # no replica here any more
    resumed = await open_watch(four, via, prefix="m:", last_event_id=last_id)
    while any(len(received[k]) < 2 for k in keys):
        message = await resumed.next()
        if message.event == "change":
            data = orjson.loads(message.data)
            received[data["changes"][0]["key"]].append(data["version"])
    resumed.close()
    assert dict(received) == {k: [acked[0][k], acked[1][k]] for k in keys}
