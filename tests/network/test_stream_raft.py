"""Raft over the stream transport: 3 real nodes in one process (the server's app on real loopback
sockets, memory storage): elect, replicate, cut connections while writes flow, converge; and a
mixed cluster (one node on HTTP, two on the stream) where negotiation picks the way per peer."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from raftcache.network import HttpNetwork
from raftcache.network.stream import StreamNetwork
from raftcache.process.config import ServeOptions
from raftcache.process.serve import NodeServer, build_node_server
from raftcache.storage.memory import MemoryStorage
from tests.server.cluster import Cluster, fast_raft, free_ports, start_cluster

WRITES = 60
CUTS = 3


async def _put(cluster: Cluster, url: str, key: str, value: bytes) -> None:
    async with cluster.session.put(f"{url}/v1/keys/{key}", data=value) as resp:
        assert resp.status == 200, await resp.text()


async def _stale(cluster: Cluster, url: str, key: str) -> bytes | None:
    async with cluster.session.get(f"{url}/v1/keys/{key}?consistency=stale") as resp:
        return await resp.read() if resp.status == 200 else None


async def _converged(cluster: Cluster, expected: dict[str, bytes]) -> None:
    """Every node applies the leader's commit index and holds exactly ``expected``."""
    leader = await cluster.leader()
    commit = leader.node.commit_index
    async with asyncio.timeout(30):
        while any(s.node.last_applied < commit for s in cluster.servers):
            await asyncio.sleep(0.02)
    for server in cluster.servers:
        got = {k: await _stale(cluster, server.url, k) for k in expected}
        assert got == expected, server.node.node_id


def _stream(server: NodeServer) -> StreamNetwork:
    network = server.node.network
    assert isinstance(network, StreamNetwork)
    return network


async def test_replication_survives_connections_cut_mid_stream(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = await start_cluster(tmp_path, raft_transport="stream", cluster_token="r-tok")
    try:
        leader = await cluster.leader()
        follower = (await cluster.followers())[0]
        expected: dict[str, bytes] = {}
        acked = 0

        async def writer(i: int) -> None:
            nonlocal acked
            key, value = f"k{i:03d}", bytes([i % 256]) * (i + 1)
            await _put(cluster, follower.url, key, value)  # forwarded to the leader
            expected[key] = value
            acked += 1

        network = _stream(leader)
        peers = [s.node.node_id for s in cluster.servers if s is not leader]
        writes = [asyncio.ensure_future(writer(i)) for i in range(WRITES)]

        def connected() -> bool:
            stats = network.stream_stats()
            return all(p in stats and stats[p]["mode"] == "stream" for p in peers)

        for cut in range(1, CUTS + 1):
            # Cut after some acks (the streams are busy then), once both are up again: a
            # quorum does not need the second follower, so its stream may still be reconnecting.
            async with asyncio.timeout(30):
                while acked < cut * WRITES // (CUTS + 1) or not connected():
                    await asyncio.sleep(0.005)
            network.drop_connections()
            async with asyncio.timeout(30):  # every cut is noticed (a certain event, no window)
                while any(network.stream_stats()[p]["losses"] < cut for p in peers):
                    await asyncio.sleep(0.005)
        await asyncio.gather(*writes)
        assert len(expected) == WRITES
        await _converged(cluster, expected)
        async with asyncio.timeout(30):  # heartbeats reconnect the last stream cut too
            while not connected():
                await asyncio.sleep(0.005)
        stats = network.stream_stats()
        for peer in peers:
            assert stats[peer]["losses"] >= CUTS
            assert stats[peer]["connects"] >= CUTS + 1  # reconnected after every cut
        sent = network.metrics.snapshot()["outbound"]["AppendEntries"]
        assert all(sent[p]["ok"] > 0 for p in peers)
    finally:
        await cluster.stop()
    # Draining closed the inbound streams: no stop waited for them until its timeout.
    assert "requests still in progress" not in caplog.text


async def _mixed_cluster(tmp_path: Path, transports: list[str]) -> Cluster:
    ports = free_ports(len(transports))
    peers = {f"n{i + 1}": f"http://127.0.0.1:{port}" for i, port in enumerate(ports)}
    servers = []
    for i, (port, transport) in enumerate(zip(ports, transports, strict=True)):
        options = ServeOptions(
            id=f"n{i + 1}",
            host="127.0.0.1",
            port=port,
            peers=peers,
            data_dir=tmp_path / f"n{i + 1}",
            network_timeout_s=0.5,
            shutdown_timeout_s=2.0,
            raft_transport=transport,
        )
        servers.append(build_node_server(options, raft_config=fast_raft(), storage=MemoryStorage()))
    for server in servers:
        await server.start()
    return Cluster(servers, aiohttp.ClientSession())


async def _lead(cluster: Cluster, node_id: str) -> None:
    """Make ``node_id`` the leader (a leader talks to every peer: negotiation happens)."""
    url = (await cluster.leader()).url
    async with cluster.session.post(url + "/v1/leader/transfer", json={"to": node_id}) as resp:
        assert resp.status == 200, await resp.text()
    assert (await cluster.leader()).node.node_id == node_id


@pytest.mark.parametrize("wire", ["json", "msgpack"])
async def test_a_mixed_cluster_negotiates_per_peer(tmp_path: Path, wire: str) -> None:
    cluster = await _mixed_cluster(tmp_path, ["http", "stream", "stream"])
    for server in cluster.servers:  # the HTTP fallback's body format
        network = server.node.network
        assert isinstance(network, HttpNetwork)
        network.wire_format = wire
    try:
        expected = {}
        for lead in ("n1", "n2", "n3"):  # each transport leads in turn
            await _lead(cluster, lead)
            for i, server in enumerate(cluster.servers * 2):
                key, value = f"{lead}-{i}", f"value {i}".encode()
                await _put(cluster, server.url, key, value)
                expected[key] = value
            await _converged(cluster, expected)
        assert not isinstance(cluster.servers[0].node.network, StreamNetwork)
        for me, other in (("n2", "n3"), ("n3", "n2")):
            stats = _stream(cluster.servers[int(me[1]) - 1]).stream_stats()
            assert stats["n1"]["mode"] == "http"  # n1 does not serve the stream: 404
            assert stats["n1"]["connects"] == 0
            assert stats[other]["connects"] >= 1, (me, stats)
    finally:
        await cluster.stop()


async def test_options_pick_the_transport(tmp_path: Path) -> None:
    base = ServeOptions(
        id="n1", host="127.0.0.1", port=0, peers={"n1": "http://127.0.0.1:1"}, data_dir=tmp_path
    )
    plain = build_node_server(base, raft_config=fast_raft(), storage=MemoryStorage())
    stream = build_node_server(
        replace(base, raft_transport="stream", raft_wire="msgpack"),
        raft_config=fast_raft(),
        storage=MemoryStorage(),
    )
    assert type(plain.node.network) is HttpNetwork
    assert plain.node.network.wire_format == "json"
    assert isinstance(stream.node.network, StreamNetwork)
    assert stream.node.network.wire_format == "msgpack"
