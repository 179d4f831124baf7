"""A member added by ``POST /v1/members`` is reached at each node's own route for it.

The configuration entry of an added member replicates one URL — the one in the request — and
every node used to dial exactly that, which breaks whenever nodes reach each other differently:
NAT, multi-homed hosts, split-horizon DNS, and the harness's proxy mesh (one proxy per ordered
pair: a node added back was reached around the proxies, so later partitions leaked for it).
``raftcache serve --peer-address-override ID=URL,...`` names this node's own route for a peer,
which wins over the replicated URL, for Raft traffic and for forwarding to the leader alike.

The checks are events that must happen when every route goes through the mesh, and cannot
when one goes around it: a write through a node cut off by the mesh never commits, and a
leader whose link to a follower is cut sees its appends to that follower fail.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from raftcache.process.config import ConfigError, resolve_options
from raftcache.testing.harness import ProcessCluster
from raftcache.testing.membership import add_member, membership, remove_member
from raftcache.testing.proxy import ProxyMode

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

BASE = {"id": "n1", "listen": "127.0.0.1:8001", "data_dir": "/tmp/x"}
PEERS = "n1=http://127.0.0.1:8001,n2=http://127.0.0.1:8002"


def test_the_override_option_from_flags_env_and_file(tmp_path: Path) -> None:
    flags = {**BASE, "peers": PEERS, "peer_address_override": "n2=http://10.0.0.2:9000/"}
    assert resolve_options(flags, {}).peer_address_override == {"n2": "http://10.0.0.2:9000"}
    env = {"RAFTCACHE_PEER_ADDRESS_OVERRIDE": "n3=https://h3:1"}
    assert resolve_options({**BASE, "peers": PEERS}, env).peer_address_override == {
        "n3": "https://h3:1"
    }
    toml = tmp_path / "c.toml"
    toml.write_text('[peer-address-override]\nn2 = "http://10.0.0.2:9000"\n', encoding="utf-8")
    options = resolve_options({**BASE, "peers": PEERS}, {}, config_path=str(toml))
    assert options.peer_address_override == {"n2": "http://10.0.0.2:9000"}
    assert resolve_options({**BASE, "peers": PEERS}, {}).peer_address_override == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [("n1=http://127.0.0.1:9", "names this node"), ("n2=ftp://x", "is not ID=http")],
)
def test_a_bad_override_is_refused_by_name(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        resolve_options({**BASE, "peers": PEERS, "peer_address_override": value}, {})
    assert "--peer-address-override" in str(info.value)


async def _appends_failing(cluster: ProcessCluster, leader: str, follower: str) -> int:
    """How many AppendEntries the leader has seen fail towards ``follower`` so far."""
    reply, data, _ = await cluster.api.request(cluster.url(leader), "GET", "/v1/stats", write=False)
    assert reply.ok, reply
    peers = json.loads(data)["network"]["outbound"].get("AppendEntries", {})
    return sum(peers.get(follower, {}).get("errors", {}).values())


async def _cut_appends_fail(cluster: ProcessCluster, leader: str, follower: str) -> bool:
    """Reject the leader's connections to ``follower`` in the mesh; True once the leader's own
    figures show appends to it failing (certain within a few heartbeats when the leader dials
    the follower through the proxy; never when it goes around)."""
    before = await _appends_failing(cluster, leader, follower)
    cluster.mesh.set_link(leader, follower, ProxyMode.REJECT)
    try:
        for _ in range(50):  # 10 s: heartbeats go out every 0.1 s
            if await _appends_failing(cluster, leader, follower) >= before + 3:
                return True
            await asyncio.sleep(0.2)
        return False
    finally:
        cluster.mesh.heal()


async def _readd_and_check(cluster: ProcessCluster) -> tuple[str, bool, list[str]]:
    """Remove a follower, add it back at its real URL, make it the leader; then whether the
    old leader's appends to it go through the mesh, and which nodes reach it around it."""
    leader = await cluster.wait_for_leader(60.0)
    member = next(n for n in cluster.node_ids if n != leader)
    assert await remove_member(cluster, member, 30.0)
    assert await add_member(cluster, member, 60.0)
    seen = await membership(cluster)
    assert seen is not None
    assert member in seen[1], seen
    # Raft traffic: the leader dials the member it just added through its proxy for it.
    leader = await cluster.wait_for_leader(60.0)
    through_mesh = leader == member or await _cut_appends_fail(cluster, leader, member)
    # Forwarding: with the member leading, every other node forwards writes to it.
    for _ in range(5):
        if (await cluster.api.transfer_leader(cluster.url(leader), member)).ok:
            break
        leader = await cluster.wait_for_leader(60.0)
    assert await cluster.leader() == member
    # One other node suffices: each forwards to the leader at the same replicated URL. A
    # write through the mesh cannot commit at all; one around it commits at once.
    other = next(n for n in cluster.node_ids if n != member)
    return member, through_mesh, await cluster.mesh_leaks(timeout_s=1.5, nodes=[other])


async def test_a_member_added_back_is_reached_through_each_nodes_own_route(
    tmp_path: Path,
) -> None:
    async with ProcessCluster(["n1", "n2", "n3"], tmp_path, rng=random.Random(3)) as cluster:
        _, through_mesh, leaks = await _readd_and_check(cluster)
    assert through_mesh
    assert leaks == []


@pytest.mark.slow
async def test_without_overrides_the_replicated_url_goes_around_the_mesh(tmp_path: Path) -> None:
    """The baseline the option fixes, and proof that the checks above can fail."""
    cluster = ProcessCluster(
        ["n1", "n2", "n3"], tmp_path, rng=random.Random(3), address_overrides=False
    )
    async with cluster:
        member, through_mesh, leaks = await _readd_and_check(cluster)
    assert not through_mesh
    assert leaks == [next(n for n in cluster.node_ids if n != member)]
