"""The topology behind CLUSTER SLOTS and MOVED, against members that misbehave: an address that
is not one, a member that closed its RESP listeners or stopped answering, a learner, an IPv6
host (as Redis writes it), a status body too large to read."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Any

import pytest
from aiohttp import web
from redis.exceptions import MovedError

from raftcache.resp.cluster import redirect
from raftcache.resp.errors import reply_for
from raftcache.resp.topology import (
    DOWN_AFTER,
    MAX_STATUS_BYTES,
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
