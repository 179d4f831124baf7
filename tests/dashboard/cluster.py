"""A real in-process cluster (tests/server/cluster.py's pieces) with the dashboard on every node.

``start_cluster`` there starts the nodes as it builds them, and an aiohttp app's routes freeze
when it starts; so this builds the same nodes, adds the dashboard routes, then starts them.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp

from raftcache.dashboard import add_dashboard_routes
from raftcache.process.config import ServeOptions
from raftcache.process.serve import NodeServer, build_node_server
from raftcache.storage.memory import MemoryStorage
from tests.server.cluster import Cluster, fast_raft, free_ports


async def start_dashboard_cluster(tmp_path: Path, size: int = 3) -> Cluster:
    """Start ``size`` nodes n1..nN on loopback, each serving the dashboard."""
    ports = free_ports(size)
    peers = {f"n{i + 1}": f"http://127.0.0.1:{port}" for i, port in enumerate(ports)}
    servers: list[NodeServer] = []
    for node_id, url in peers.items():
        options = ServeOptions(
            id=node_id,
            host="127.0.0.1",
            port=int(url.rsplit(":", 1)[1]),
            peers=peers,
            data_dir=tmp_path / node_id,
            network_timeout_s=0.5,
            shutdown_timeout_s=2.0,
        )
        server = build_node_server(options, raft_config=fast_raft(), storage=MemoryStorage())
        add_dashboard_routes(server.app, peer_urls=peers, self_id=node_id)
        servers.append(server)
    cluster = Cluster(servers, aiohttp.ClientSession())
    try:
        for server in servers:
            await server.start()
    except BaseException:
        await cluster.stop()
        raise
    return cluster
