"""A store refuses a replica that would put two of a group's replicas on one host (invariant 4).

``POST /raft/store/replicas`` on a real store application over loopback HTTP: the store knows
the stores' host labels and which are leaving from the last map its agent read
(``Store.learn_hosts``). A request naming a group whose configuration has a staying replica on
this store's host is answered 409 naming the group, the host and the other store, and leaves
nothing behind (no ledger record: the same request goes through once the labels allow). A
replica on a *leaving* store does not hold its host: the move replacing it goes through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from raftcache.store import group_id
from tests.store.stores_http import (
    StoreServer,
    bootstrap_placement,
    loopback,
    serve_store,
    store_ids,
    store_settings,
)

IDS = store_ids(4)
GROUPS = 2


@pytest.fixture
async def s4() -> AsyncIterator[tuple[StoreServer, str, list[str]]]:
    ports, urls = loopback(IDS)
    placement = bootstrap_placement(IDS, GROUPS)
    gid = next(group_id(g) for g in range(GROUPS) if "s4" not in placement[group_id(g)])
    server = await serve_store(
        "s4", ports["s4"], urls, store_settings(urls), groups=GROUPS, placement=placement
    )
    try:
        yield server, gid, placement[gid]
    finally:
        await server.runner.cleanup()


async def _post(server: StoreServer, body: object) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.url}/raft/store/replicas", json=body) as answer,
    ):
        return answer.status, await answer.json()


async def test_a_replica_on_a_host_the_group_uses_is_refused_naming_why(
    s4: tuple[StoreServer, str, list[str]],
) -> None:
    server, gid, voters = s4
    assert voters == ["s1", "s2", "s3"]
    hosts = {"s1": "h1", "s2": "h2", "s3": "h3", "s4": "h2"}
    server.store.learn_hosts(hosts, leaving=[])
    status, body = await _post(server, {"group": gid, "voters": voters})
    assert status == 409, body
    error = str(body["error"])
    assert gid in error, error
    assert "'h2'" in error, error
    assert "store s2" in error, error
    assert server.store.hosted(gid) is None
    assert server.store.ledger.record(gid) is None  # nothing recorded: a retry may succeed

    # s2 drains (leaving): its replacement may share its host for the move.
    server.store.learn_hosts(hosts, leaving=["s2"])
    status, body = await _post(server, {"group": gid, "voters": voters})
    assert status == 200, body
    assert body["existing"] is False
    assert server.store.hosted(gid) is not None


async def test_a_replica_on_a_host_of_its_own_is_created(
    s4: tuple[StoreServer, str, list[str]],
) -> None:
    server, gid, voters = s4
    server.store.learn_hosts({"s1": "h1", "s2": "h1", "s3": "h2", "s4": "h3"}, leaving=[])
    status, body = await _post(server, {"group": gid, "voters": voters})
    assert status == 200, body  # a clash among the others is theirs to repair, not a refusal
    assert str(body["replica"]).startswith("s4.")
