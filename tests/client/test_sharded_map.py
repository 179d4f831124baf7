"""The cluster map a client holds (``raftcache.client.shards``), ``GET /v1/shards`` of a
one-group node, and a one-group cluster's requests left exactly as they were."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from raftcache.client import AsyncClient, ProtocolError
from raftcache.client.shards import ShardMap, crossslot_error, parse_shards
from raftcache.client.transport import FORWARDED_HEADER
from raftcache.server.app import create_app
from raftcache.server.context import ServerSettings
from raftcache.server.groups import crossslot
from raftcache.slots import SLOTS, key_group
from tests.client.client_fakes import FakeCluster
from tests.server.fakes import FakeNode, FakeService


def answer(
    store: str, leaders: list[str | None], terms: list[int | None], **extra: Any
) -> dict[str, Any]:
    groups = len(leaders)
    return {
        "groups": groups,
        "store": store,
        "version": 7,
        "stores": {s: f"http://adv-{s}:80" for s in ("s1", "s2", "s3")},
        "shards": [
            {
                "group": f"g{g}",
                "slots": [g * SLOTS // groups, (g + 1) * SLOTS // groups - 1],
                "leader": leaders[g],
                "term": terms[g],
                "members": ["s1", "s2", "s3"],
            }
            for g in range(groups)
        ],
        **extra,
    }


def test_merge_takes_each_groups_leader_from_the_highest_term_seen_by_a_replica() -> None:
    one = parse_shards(answer("s1", ["s1", "s2", None], [5, 2, 1]))
    two = parse_shards(answer("s2", ["s3", "s2", None], [6, 2, None]))
    three = parse_shards(answer("s3", [None, "s1", "s3"], [7, None, None]))  # guesses: no term
    merged = ShardMap.merge([("http://e1", one), ("http://e2", two), ("http://e3", three)])
    assert merged is not None
    # g0: term 6's leader (term 7 knows none yet); g1: a replica's view beats a guess; g2:
    # only a guess.
    assert merged.leaders == ["s3", "s2", "s3"]
    # The endpoints the user gave win over the addresses the stores advertise.
    assert merged.stores == {"s1": "http://e1", "s2": "http://e2", "s3": "http://e3"}
    assert merged.leader_url(0) == "http://e3"
    assert merged.group_of("user:{42}") == key_group("42", 3)
    assert ShardMap.merge([]) is None


def test_a_store_the_endpoints_do_not_name_is_reached_at_its_advertised_url() -> None:
    merged = ShardMap.merge([("http://e1", parse_shards(answer("s1", ["s2", "s2"], [1, 1])))])
    assert merged is not None
    assert merged.leader_url(0) == "http://adv-s2:80"
    assert merged.follow(1, "s3")
    assert merged.leader_url(1) == "http://adv-s3:80"
    assert not merged.follow(1, "s9")  # a store the map does not know: no use
    assert not merged.follow(1, None)
    assert merged.follow(0, "s3.2")  # a replica moved onto s3: reached at s3 (review finding)
    assert merged.leader_url(0) == "http://adv-s3:80"
    merged.forget(0)
    assert merged.leader_url(0) is None


@pytest.mark.parametrize(
    "body",
    [
        {"groups": 0, "shards": []},
        {"groups": 2, "shards": "x"},
        {"groups": 2, "stores": {"s1": 1}, "shards": []},
        {"groups": 2, "shards": [{"group": "g2", "leader": None}]},
        {"groups": 2, "shards": [{"group": "x", "leader": None}]},
        {"groups": 2, "shards": [{"group": "g0", "leader": 3}]},
        {"groups": 2, "shards": [{"group": "g0", "leader": "s1", "term": "1"}]},
        {"groups": 2, "version": None, "shards": []},
    ],
)
def test_a_malformed_map_is_a_protocol_error(body: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        parse_shards(body)


def test_crossslot_is_the_stores_own_refusal() -> None:
    keys = ["user:1", "é{x}", "user:1", "user:2", "cart"]
    groups = {key_group(k, 4) for k in keys}
    assert len(groups) > 1
    refused = crossslot_error(keys, 4)
    assert refused is not None
    first: dict[int, str] = {}
    for key in keys:
        first.setdefault(key_group(key, 4), key)
    server = crossslot({f"g{g}": first[g] for g in sorted(first)})
    assert refused.status == server.status == 400
    assert refused.body == {"error": server.message, **server.extra}
    assert crossslot_error(["{t}a", "{t}b"], 4) is None
    assert crossslot_error(keys, 1) is None


async def test_shards_of_a_one_group_node() -> None:
    node = FakeNode(leader_id="n2")
    urls = {n: f"http://127.0.0.1:{9001 + i}" for i, n in enumerate(node.members)}
    app = create_app(node, FakeService(node), ServerSettings(peer_urls=urls))
    async with TestClient(TestServer(app)) as http:
        resp = await http.get("/v1/shards")
        assert resp.status == 200
        body = await resp.json()
        assert body == {
            "groups": 1,
            "store": "n1",
            "version": node.current_term,
            "stores": urls,
            "shards": [
                {
                    "group": "g0",
                    "slots": [0, SLOTS - 1],
                    "leader": "n2",
                    "term": node.current_term,
                    "hosted": True,
                    "members": ["n1", "n2", "n3"],
                }
            ],
        }
        node.leader_id = "n3"  # a new leader in the same term (a test's fake): a new version
        assert (await (await http.get("/v1/shards")).json())["version"] == node.current_term + 1
        node.current_term += 1
        assert (await (await http.get("/v1/shards")).json())["version"] == node.current_term + 1
        parsed = parse_shards(orjson.loads(await (await http.get("/v1/shards")).read()))
        assert parsed.groups == 1
        assert parsed.shards[0].leader == "n3"


async def test_a_one_group_cluster_is_served_as_before(cluster: FakeCluster) -> None:
    """No map, no header, no split: the requests of the release before, one by one."""
    async with AsyncClient(cluster.endpoints()) as client:
        await client.set("a", b"1")
        keys = ["a", "b", "user:1", "user:2", "cart"]
        assert len({key_group(k, 16) for k in keys}) > 1
        assert await client.mget(keys) == [b"1", None, None, None, None]
        assert len(set(await client.batch([("set", k, b"x") for k in keys[1:]]))) == 1
        assert await client.get("a") == b"1"
        assert client.shards is None
        assert client.routing.refreshes == client.routing.direct == 0
    paths = [r.raw_path.split("?")[0] for r in cluster.requests]
    assert "/v1/shards" not in paths
    assert paths.count("/v1/mget") == 1
    assert paths.count("/v1/batch") == 1
    assert not any(FORWARDED_HEADER.lower() in map(str.lower, r.headers) for r in cluster.requests)


def test_what_was_learnt_during_a_refresh_outlives_its_answer() -> None:
    older = ShardMap(3, ["s1", None, "s2"], {"s1": "http://e1", "s2": "http://e2"})
    fresh = ShardMap(3, ["s2", "s2", "s1"], {"s1": "http://e1", "s2": "http://e2"})
    fresh.keep_newer(older, [0, 1])  # g0 followed a hint to s1, g1's leader did not answer
    assert fresh.leaders == ["s1", None, "s1"]
