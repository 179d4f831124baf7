"""The topology behind CLUSTER SLOTS and MOVED, against members that misbehave: an address that
is not one, a member that closed its RESP listeners or stopped answering, a learner, an IPv6
host (as Redis writes it), a status body too large to read; CLUSTER SLOTS during the first
poll (it waits for it, bounded, so a client given one node learns them all; MOVED never
waits)."""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from redis.exceptions import MovedError

from raftcache.resp.cluster import redirect
from raftcache.resp.errors import reply_for
from raftcache.resp.topology import (
    DOWN_AFTER,
    MAX_STATUS_BYTES,
    STATUS_TIMEOUT_S,
    Advertised,
    HttpStatusFetcher,
    Topology,
    join_address,
    split_address,
)

from .test_cluster_commands import FakeClient, FakeNode, FakeServer, call, polled


def _topology(statuses: dict[str, Any], me: str = "n1", leader: str | None = "n2") -> Topology:
    return polled(statuses, me=me, leader=leader)


def _cluster(topology: Topology, sub: bytes) -> Any:
    try:
        return call(b"CLUSTER", sub).run_server(FakeClient(FakeServer(topology)))
    except Exception as exc:  # what the executor would answer
        return reply_for(exc, is_write=False)


def _moved(topology: Topology, *words: bytes) -> str | None:
    answer = redirect(FakeClient(FakeServer(topology, cluster_mode=True)), call(*words))  # type: ignore[arg-type]
    return None if answer is None else answer.line


def _resp(address: str, cluster: str) -> dict[str, Any]:
    return {"resp": {"address": address, "cluster_address": cluster}}


def _statuses() -> dict[str, Any]:
    """n2 with both ports, n3 with a cluster-mode port only."""
    return {"http://n2.test": _resp("h2:6002", "h2:7002"), "http://n3.test": _resp("", "h3:7003")}


@pytest.mark.parametrize(
    "garbage", ["not-an-address", "h3:0", "h3:65536", ":7003", "h 3:7003", "h3:７００３", "[h3]x:1"]
)
def test_a_member_advertising_garbage_is_left_out_not_an_error(garbage: str) -> None:
    topology = _topology(
        {"http://n2.test": _resp("h2:6002", "h2:7002"), "http://n3.test": _resp("", garbage)}
    )
    slots = _cluster(topology, b"SLOTS")
    assert [entry[1] for entry in slots[0][2:]] == [7002, 7001]  # n3 is not advertised
    assert [n["port"] for n in _cluster(topology, b"SHARDS")[0]["nodes"]] == [7001, 7002]
    assert len(str(_cluster(topology, b"NODES")).splitlines()) == 2
    assert "cluster_state:ok" in str(_cluster(topology, b"INFO"))


def test_a_member_that_closed_its_resp_listeners_is_forgotten() -> None:
    statuses = _statuses()
    topology = _topology(statuses)
    assert _moved(topology, b"GET", b"k") == "MOVED 7629 h2:7002"
    statuses["http://n2.test"] = {"id": "n2", "role": "leader"}  # restarted without RESP
    asyncio.run(topology.refresh())
    assert topology.advertised("n2") is None
    assert _moved(topology, b"GET", b"k") == "CLUSTERDOWN The cluster is down"
    assert _cluster(topology, b"SLOTS") == []


def test_a_member_that_stops_answering_is_down_after_three_polls_and_back_after_one() -> None:
    statuses = _statuses()
    topology = _topology(statuses)
    n3 = statuses.pop("http://n3.test")
    for _ in range(DOWN_AFTER - 1):
        asyncio.run(topology.refresh())
    assert 7003 in [entry[1] for entry in _cluster(topology, b"SLOTS")[0][2:]]  # not yet
    asyncio.run(topology.refresh())
    assert topology.is_down("n3")
    assert 7003 not in [entry[1] for entry in _cluster(topology, b"SLOTS")[0][2:]]
    assert 7003 not in [n["port"] for n in _cluster(topology, b"SHARDS")[0]["nodes"]]
    line = next(x for x in str(_cluster(topology, b"NODES")).splitlines() if ":7003@" in x)
    assert " slave,fail " in line
    assert " disconnected" in line
    statuses["http://n3.test"] = n3
    asyncio.run(topology.refresh())
    assert 7003 in [entry[1] for entry in _cluster(topology, b"SLOTS")[0][2:]]


def test_a_learner_is_not_advertised() -> None:
    async def fetch(url: str) -> Mapping[str, Any] | None:
        host = url.removeprefix("http://").removesuffix(".test")
        return _resp("", f"{host}:7000")

    node = FakeNode("n1", "n2", ["n1", "n2", "n3"])
    node.learners = ["n4"]  # being added: empty until its first snapshot installs
    topology = Topology(node, Advertised(), fetch)
    topology.set_own(Advertised("", "n1:7000"))
    asyncio.run(topology.refresh())
    assert [entry[0] for entry in _cluster(topology, b"SLOTS")[0][2:]] == [b"n2", b"n1", b"n3"]
    assert "n4:" not in str(_cluster(topology, b"NODES"))
    assert topology.advertised("n4") is None


def test_an_ipv6_leader_is_moved_to_as_redis_writes_it() -> None:
    leader = join_address("::1", 7002)  # what serve.py advertises for --advertise-host ::1
    assert leader == "::1:7002"
    topology = _topology(
        {"http://n2.test": _resp("", leader), "http://n3.test": _resp("", "[fe80::3]:7003")}
    )
    moved = _moved(topology, b"GET", b"k")
    assert moved == "MOVED 7629 ::1:7002"
    error = MovedError(moved.removeprefix("MOVED "))  # how redis-py parses "-MOVED ..."
    assert (error.host, error.port) == ("::1", 7002)
    socket.getaddrinfo(error.host, error.port)  # what redis-py's connect does
    slots = _cluster(topology, b"SLOTS")
    hosts = [entry[:2] for entry in slots[0][2:]]
    assert hosts == [[b"::1", 7002], [b"h1", 7001], [b"fe80::3", 7003]]
    assert "fe80::3:7003@17003 " in str(_cluster(topology, b"NODES"))


def test_split_address_takes_both_ipv6_forms() -> None:
    assert split_address("::1:7002") == ("::1", 7002)
    assert split_address("[::1]:7002") == ("::1", 7002)
    assert split_address("cache-1.lan:7001") == ("cache-1.lan", 7001)
    for bad in ("", "h", "h:", ":1", "h:0", "h:99999", "h:-1", "a b:1", "h:1\n"):
        with pytest.raises(ValueError, match=r"address|port"):
            split_address(bad)


async def test_a_status_body_over_the_cap_is_a_failed_poll() -> None:
    body = {"resp": {"address": "", "cluster_address": "h2:7002"}}

    async def small(request: web.Request) -> web.Response:
        return web.json_response(body)

    async def huge(request: web.Request) -> web.StreamResponse:
        padded = {**body, "padding": "x" * MAX_STATUS_BYTES}
        return web.json_response(padded)

    app = web.Application()
    app.router.add_get("/small/v1/status", small)
    app.router.add_get("/huge/v1/status", huge)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fetch = HttpStatusFetcher(token=None, ssl_context=None)
    try:
        assert await fetch(f"http://127.0.0.1:{port}/small") == body
        assert await fetch(f"http://127.0.0.1:{port}/huge") is None
        assert await fetch(f"http://127.0.0.1:{port}/missing") is None
    finally:
        await fetch.close()
        await runner.cleanup()


class _LocalNode(FakeNode):
    """n1 of n1..n3, whose peers' ``/v1/status`` are served under ``base`` (``<base>/n2``)."""

    def __init__(self, base: str) -> None:
        super().__init__("n1", "n2", ["n1", "n2", "n3"])
        self.base = base

    def peer_url(self, node_id: str) -> str | None:
        return f"{self.base}/{node_id}"


async def _slots_now(topology: Topology) -> Any:
    """CLUSTER SLOTS as the connection runs it (awaiting the reply when it is awaitable)."""
    reply = call(b"CLUSTER", b"SLOTS").run_server(FakeClient(FakeServer(topology)))
    return await reply if inspect.isawaitable(reply) else reply


def _ports(slots: Any) -> list[int]:
    return [int(node[1]) for entry in slots for node in entry[2:]]


@pytest_asyncio.fixture
async def slow_n2() -> AsyncIterator[tuple[str, asyncio.Event, asyncio.Event]]:
    """Real ``/v1/status`` of n2 and n3 over HTTP: n3 answers at once, n2 once released.
    Yields (base URL, n2 asked, release n2)."""
    asked, release = asyncio.Event(), asyncio.Event()

    async def status(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "n2":
            asked.set()
            await release.wait()
        return web.json_response(_resp("", f"h{name[1]}:700{name[1]}"))

    app = web.Application()
    app.router.add_get("/{name}/v1/status", status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", asked, release
    finally:
        release.set()
        await runner.cleanup()


async def test_cluster_slots_during_the_first_poll_waits_for_it_and_lists_every_member(
    slow_n2: tuple[str, asyncio.Event, asyncio.Event],
) -> None:
    """A client given one node right after the start must learn every member from it: CLUSTER
    SLOTS waits for the poll in flight (a slow member) rather than list only this node."""
    base, asked, release = slow_n2
    fetch = HttpStatusFetcher(token=None, ssl_context=None)
    topology = Topology(_LocalNode(base), Advertised("", "h1:7001"), fetch, on_stop=fetch.close)
    topology.settle_s = 30.0  # n2 is released well before: the content, not the bound, is tested
    topology.start()
    try:
        slots = asyncio.create_task(_slots_now(topology))
        await asyncio.wait_for(asked.wait(), 30)  # the first poll is in flight, n2 unanswered
        # The hot path never waits: the leader n2 is not known yet, so CLUSTERDOWN at once.
        assert _moved(topology, b"GET", b"k") == "CLUSTERDOWN The cluster is down"
        release.set()
        assert _ports(await asyncio.wait_for(slots, 30)) == [7002, 7001, 7003]
        assert topology.settle() is None  # every member answered: nothing more to wait for
        assert _ports(await _slots_now(topology)) == [7002, 7001, 7003]
        assert _moved(topology, b"GET", b"k") == "MOVED 7629 h2:7002"
    finally:
        await topology.stop()


async def test_a_member_that_never_answers_delays_cluster_slots_by_the_bound_only() -> None:
    """n3 never answers its first poll: CLUSTER SLOTS waits at most the bound, then lists what
    the poll heard so far (n2 answered at once), not n3."""
    hang = asyncio.Event()  # never set

    async def fetch(url: str) -> Mapping[str, Any] | None:
        if url.endswith("n3.test"):
            await hang.wait()
        return _statuses().get(url)

    topology = Topology(FakeNode("n1", "n2", ["n1", "n2", "n3"]), Advertised(), fetch)
    topology.set_own(Advertised("h1:6001", "h1:7001"))
    assert topology.settle_s == STATUS_TIMEOUT_S
    topology.start()
    try:
        slots = await asyncio.wait_for(_slots_now(topology), 30 * STATUS_TIMEOUT_S)  # returns
        assert _ports(slots) == [7002, 7001]
        assert topology.advertised("n3") is None
        assert not topology.is_down("n3")  # its poll is still under way
    finally:
        await topology.stop()


async def test_clients_asking_do_not_make_a_silent_member_down_sooner() -> None:
    """Each CLUSTER SLOTS while n3 has never answered starts an extra poll; its failures do not
    count, so n3 is down after DOWN_AFTER polls at the poller's pace, not after a few calls."""
    asked = {"n2": 0, "n3": 0}

    async def fetch(url: str) -> Mapping[str, Any] | None:
        asked[url.removeprefix("http://").removesuffix(".test")] += 1
        return _statuses().get(url) if url.endswith("n2.test") else None  # n3 refuses

    node = FakeNode("n1", "n2", ["n1", "n2", "n3"])
    topology = Topology(node, Advertised("h1:6001", "h1:7001"), fetch, refresh_s=3600.0)
    topology.start()  # one scheduled poll now, the next in an hour
    try:
        for _ in range(2 * DOWN_AFTER):
            assert _ports(await _slots_now(topology)) == [7002, 7001]
        assert not topology.is_down("n3")  # one scheduled poll failed: not down
        assert asked["n3"] > DOWN_AFTER  # although the calls did start extra polls
        waits = topology.settle()  # so the commands still wait for n3
        assert waits is not None
        await waits
    finally:
        await topology.stop()
