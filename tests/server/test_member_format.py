"""Adding a node that cannot apply the cluster's command format is refused before the change.

A two-node cluster runs command format 2; n3 started with ``max_command_format=1`` (the older
release) is refused by ``POST /v1/members`` with 409 naming it, and is not made a learner. The
same n3 restarted without the cap is added. ``FormatGate.admit`` itself: a node that did not
answer is admitted (it may be started after it is added; too old, it would stop at the first
entry it cannot apply, which is safe).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from raftcache.cache.formats import FormatNotEnabled
from raftcache.cache.upgrade import FormatGate
from raftcache.process.config import ServeOptions
from raftcache.process.serve import NodeServer, build_node_server
from raftcache.storage.memory import MemoryStorage

from .cluster import fast_raft, free_ports


async def _start(options: ServeOptions) -> NodeServer:
    server = build_node_server(options, raft_config=fast_raft(), storage=MemoryStorage())
    await server.start()
    return server


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with session.request(method, url, **kwargs) as resp:
        return resp.status, orjson.loads(await resp.read())


async def test_a_node_too_old_for_the_cluster_format_is_refused(tmp_path: Path) -> None:
    ports = free_ports(3)
    urls = {f"n{i + 1}": f"http://127.0.0.1:{port}" for i, port in enumerate(ports)}

    def options(node_id: str, peers: list[str], cap: int = 2) -> ServeOptions:
        return ServeOptions(
            id=node_id,
            host="127.0.0.1",
            port=int(urls[node_id].rsplit(":", 1)[1]),
            peers={p: urls[p] for p in peers},
            data_dir=tmp_path / node_id,
            network_timeout_s=0.5,
            shutdown_timeout_s=2.0,
            max_command_format=cap,
        )

    servers = [await _start(options(n, ["n1", "n2"])) for n in ("n1", "n2")]
    try:
        async with aiohttp.ClientSession() as s:
            async with asyncio.timeout(20):
                while not any(srv.node.role.value == "leader" for srv in servers):
                    await asyncio.sleep(0.02)
            leader = next(srv for srv in servers if srv.node.role.value == "leader")
            # A TTL change needs format 2: the leader raises the cluster's format for it.
            status, body = await _call(s, "PUT", leader.url + "/v1/keys/k", data=b"v")
            assert status == 200, body
            status, body = await _call(s, "POST", leader.url + "/v1/keys/k/ttl", json={"ttl": 60})
            assert status == 200, body
            assert leader.service.machine.command_format == 2

            old = await _start(options("n3", ["n1", "n2", "n3"], cap=1))
            servers.append(old)
            member = {"id": "n3", "url": urls["n3"]}
            status, body = await _call(s, "POST", leader.url + "/v1/members", json=member)
            assert status == 409, body
            assert body["nodes"] == {"n3": 1}
            assert "upgrade n3 before adding it" in body["error"]
            assert "n3" not in leader.node.members
            assert "n3" not in leader.node.learners

            await old.stop()
            servers.remove(old)
            servers.append(await _start(options("n3", ["n1", "n2", "n3"])))
            status, body = await _call(s, "POST", leader.url + "/v1/members", json=member)
            assert status == 200, body
            assert body["members"] == ["n1", "n2", "n3"]
    finally:
        for server in servers:
            await server.stop()


class _Machine:
    command_version = 2
    max_command_version = 2


def test_admit_refuses_only_a_node_known_to_be_behind() -> None:
    gate = FormatGate(node=None, machine=_Machine(), clock=lambda: 0.0)  # type: ignore[arg-type]
    gate.admit("n4", 2)
    gate.admit("n4", 3)
    gate.admit("n4", None)  # did not answer: it may be started later
    with pytest.raises(FormatNotEnabled) as refused:
        gate.admit("n4", 1)
    assert refused.value.nodes == {"n4": 1}
    assert refused.value.needed == 2
