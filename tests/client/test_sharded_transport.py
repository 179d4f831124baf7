"""The transport's routing on a sharded cluster against scripted stores: what it does with a
hint, with no hint, with hints that go round in circles, and how often it reads the map when
many requests are misrouted at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from raftcache.client import AsyncClient
from raftcache.client.transport import FORWARDED_HEADER, NOT_LEADER_HEADER

GROUPS = 2


@dataclass
class Scripted:
    """Two stores; both say in ``/v1/shards`` that ``reported`` leads every group; a request
    marked forwarded reaching a store other than ``leader`` is answered 503 with that store's
    entry of ``hints`` (absent: no header at all is not scripted, "" = no leader known)."""

    reported: str = "s1"
    leader: str = "s1"
    hints: dict[str, str] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    shards_reads: int = 0
    served: list[tuple[str, bool]] = field(default_factory=list)
    runners: list[web.AppRunner] = field(default_factory=list)

    def app(self, sid: str) -> web.Application:
        async def status(_: web.Request) -> web.Response:
            role = "leader" if sid == self.leader else "follower"
            return web.json_response(
                {
                    "id": sid,
                    "role": role,
                    "term": 1,
                    "leader": self.leader,
                    "sharding": {"groups": GROUPS, "store": sid},
                }
            )

        async def shards(_: web.Request) -> web.Response:
            self.shards_reads += 1
            await asyncio.sleep(0.01)
            return web.json_response(
                {
                    "groups": GROUPS,
                    "store": sid,
                    "version": 1,
                    "stores": self.urls,
                    "shards": [
                        {"group": f"g{g}", "leader": self.reported, "term": 1, "members": ["s1"]}
                        for g in range(GROUPS)
                    ],
                }
            )

        async def get_key(request: web.Request) -> web.Response:
            forwarded = FORWARDED_HEADER in request.headers
            if forwarded and sid != self.leader:
                return web.json_response(
                    {"error": "not the leader"},
                    status=503,
                    headers={"Retry-After": "1", NOT_LEADER_HEADER: self.hints.get(sid, "")},
                )
            self.served.append((sid, forwarded))
            return web.Response(body=b"v", headers={"ETag": '"3"'})

        app = web.Application()
        app.router.add_get("/v1/status", status)
        app.router.add_get("/v1/shards", shards)
        app.router.add_get("/v1/keys/{key}", get_key)
        return app

    async def start(self) -> None:
        for sid in ("s1", "s2"):
            runner = web.AppRunner(self.app(sid), access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.urls[sid] = f"http://127.0.0.1:{port}"
            self.runners.append(runner)

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    stores = Scripted()
    await stores.start()
    try:
        yield stores
    finally:
        await stores.stop()


async def test_a_burst_of_misrouted_requests_follows_the_hint_and_reads_the_map_once(
    scripted: Scripted,
) -> None:
    async with AsyncClient(list(scripted.urls.values())) as client:
        assert await client.get("warm") == b"v"
        assert scripted.shards_reads == 2  # discovery: both stores' maps
        scripted.leader, scripted.hints = "s2", {"s1": "s2"}  # moved; the map still says s1
        served = len(scripted.served)
        values = await asyncio.gather(*(client.get(f"k{i}") for i in range(50)))
        assert values == [b"v"] * 50
        # Each was turned away once at most, then went to s2 as itself told it to.
        assert scripted.served[served:] == [("s2", True)] * 50
        assert 1 <= client.routing.redirected <= 50
        assert client.routing.fallbacks == 0
        # However many were misrouted: one more read of the map (a round of two stores)
        # now, and at most one more per interval.
        await asyncio.sleep(client.transport.refresh_interval_s * 1.5)
        assert scripted.shards_reads <= 2 + 2 * 2


async def test_with_no_leader_to_follow_the_request_goes_anywhere_unmarked(
    scripted: Scripted,
) -> None:
    async with AsyncClient(list(scripted.urls.values())) as client:
        await client.get("warm")
        scripted.leader = "none"  # an election: every store knows no leader ("" hint)
        served = len(scripted.served)
        assert await client.get("k") == b"v"
        # Turned away by s1 (the map's leader), then sent without the mark: a store forwards
        # it there (here: serves it), waiting for the election as it does for any client.
        assert client.routing.redirected == 1
        assert client.routing.fallbacks >= 1
        assert scripted.served[served:][-1][1] is False


async def test_hints_that_go_round_in_circles_end_in_an_unmarked_request(
    scripted: Scripted,
) -> None:
    async with AsyncClient(list(scripted.urls.values())) as client:
        await client.get("warm")
        scripted.leader, scripted.hints = "none", {"s1": "s2", "s2": "s1"}
        served = len(scripted.served)
        assert await client.get("k") == b"v"
        assert client.routing.redirected == 4  # three hints followed, then no more
        assert scripted.served[served:] == [(scripted.served[-1][0], False)]


async def test_an_unreachable_leader_is_forgotten_until_the_map_names_another(
    scripted: Scripted,
) -> None:
    async with AsyncClient(list(scripted.urls.values())) as client:
        await client.get("warm")
        dead = scripted.runners.pop(0)  # s1, the map's leader of every group
        await dead.cleanup()
        scripted.leader = scripted.reported = "s2"
        assert await client.get("k") == b"v"
        assert client.routing.unreachable == 1
        # The next requests do not try s1 again: its groups have no leader in the map until
        # it is read again, which names s2.
        assert await client.get("k2") == b"v"
        assert client.routing.unreachable == 1
        async with asyncio.timeout(5):
            while client.shards is None or set(client.shards["leaders"].values()) != {"s2"}:
                await asyncio.sleep(0.02)
        served = len(scripted.served)
        assert await client.get("k3") == b"v"
        assert scripted.served[served:] == [("s2", True)]
