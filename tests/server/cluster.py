"""An in-process cluster of real nodes (HttpNetwork on loopback, memory storage) for tests."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp

from raftcache.cache.commands import TouchCommand, decode
from raftcache.process.config import ServeOptions
from raftcache.process.serve import NodeServer, build_node_server
from raftcache.raft.config import RaftConfig
from raftcache.storage.memory import MemoryStorage


def free_ports(count: int) -> list[int]:
    """Ports free right now (held open together so they are distinct)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def fast_raft() -> RaftConfig:
    """Timings for loopback tests: elections settle in well under a second."""
    return RaftConfig(
        election_timeout_min=0.3,
        election_timeout_max=0.6,
        heartbeat_interval=0.05,
        tick_interval=0.01,
        rpc_timeout=0.5,
    )


@dataclass
class Cluster:
    servers: list[NodeServer]
    session: aiohttp.ClientSession

    def url(self, node_id: str) -> str:
        return next(s.url for s in self.servers if s.node.node_id == node_id)

    async def leader(self, timeout: float = 10.0) -> NodeServer:
        """The server whose node every running node agrees is the leader."""
        async with asyncio.timeout(timeout):
            while True:
                leaders = {s.node.leader_id for s in self.servers if s.node._running}
                if len(leaders) == 1 and None not in leaders:
                    leader_id = leaders.pop()
                    for server in self.servers:
                        if server.node.node_id == leader_id and server.node.role.value == "leader":
                            return server
                await asyncio.sleep(0.02)

    async def followers(self) -> list[NodeServer]:
        leader = await self.leader()
        return [s for s in self.servers if s is not leader]

    async def stop(self) -> None:
        await self.session.close()
        for server in self.servers:
            await server.stop()


async def start_cluster(
    tmp_path: Path,
    size: int = 3,
    *,
    scheme: str = "http",
    session: aiohttp.ClientSession | None = None,
    raft_config: RaftConfig | None = None,
    **overrides: object,
) -> Cluster:
    """Start ``size`` nodes n1..nN; ``overrides`` replace ``ServeOptions`` fields on all;
    ``raft_config`` replaces the fast test timings."""
    ports = free_ports(size)
    peers = {f"n{i + 1}": f"{scheme}://127.0.0.1:{port}" for i, port in enumerate(ports)}
    servers: list[NodeServer] = []
    for i, port in enumerate(ports):
        node_id = f"n{i + 1}"
        options = ServeOptions(
            id=node_id,
            host="127.0.0.1",
            port=port,
            peers=peers,
            data_dir=tmp_path / node_id,
            network_timeout_s=0.5,
            shutdown_timeout_s=2.0,
        )
        options = replace(options, **overrides)  # type: ignore[arg-type]
        config = replace(raft_config) if raft_config is not None else fast_raft()
        servers.append(build_node_server(options, raft_config=config, storage=MemoryStorage()))
    for server in servers:
        await server.start()
    return Cluster(servers, session or aiohttp.ClientSession())


def touched_since(server: NodeServer, index: int) -> list[str]:
    """The keys of the TOUCH entries in ``server``'s log after ``index``."""
    log = server.node.core.log
    keys: list[str] = []
    for i in range(index + 1, log.last_index() + 1):
        command = log.entry(i).command
        try:
            decoded = decode(command) if command else None
        except Exception:  # a Raft-internal entry (no-op, configuration)
            continue
        if isinstance(decoded, TouchCommand):
            keys += decoded.keys
    return keys
