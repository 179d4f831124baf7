"""``raftcache serve --resp-port`` on a real process: redis-py talks to the replicated cache."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from raftcache.process.serve import _start_resp, build_node_server
from raftcache.resp.server import RespServer
from raftcache.resp.topology import Topology
from tests.server.cluster import free_ports
from tests.server.test_config import parse


def test_serve_with_resp_port_answers_redis_py(tmp_path: Path) -> None:
    http_port, resp_port = free_ports(2)
    url = f"http://127.0.0.1:{http_port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftcache", "serve", "--id", "n1",
         "--listen", f"127.0.0.1:{http_port}", "--peers", f"n1={url}",
         "--data-dir", str(tmp_path / "n1"), "--resp-port", str(resp_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", resp_port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
                assert time.monotonic() < deadline, "RESP port never opened"
                time.sleep(0.1)
        client = redis.Redis(port=resp_port, socket_timeout=10)
        deadline = time.monotonic() + 30
        while True:  # the one-node cluster elects itself
            try:
                assert client.set("greeting", "hi")
                break
            except redis.ResponseError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert client.get("greeting") == b"hi"
        assert client.incr("n") == 1
        assert client.dbsize() == 2
        # No --resp-cluster-port: no Redis Cluster views.
        with pytest.raises(redis.ResponseError, match="cluster support disabled"):
            client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
        info = client.info()
        assert (info["redis_mode"], info["cluster_enabled"]) == ("standalone", 0)
        client.close()
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
    assert code == 0


@pytest.mark.parametrize("cluster_port", [True, False])
async def test_one_topology_shared_by_both_listeners_cluster_views_only_with_a_cluster_port(
    tmp_path: Path, cluster_port: bool
) -> None:
    http_port, plain_port, cport = free_ports(3)
    argv = ["--id", "n1", "--listen", f"127.0.0.1:{http_port}"]
    argv += ["--peers", f"n1=http://127.0.0.1:{http_port}", "--data-dir", str(tmp_path / "n1")]
    argv += ["--resp-port", str(plain_port), "--sentinel-name", "cache-a"]
    argv += ["--resp-cluster-port", str(cport)] if cluster_port else []
    options = parse(argv)
    server = build_node_server(options)
    await server.start()
    try:
        started = await _start_resp(server, options)
        try:
            listeners = [s for s in started if isinstance(s, RespServer)]
            topologies = [s for s in started if isinstance(s, Topology)]
            assert len(listeners) == (2 if cluster_port else 1)
            (topology,) = topologies  # one poller, stopped after the listeners
            assert started[-1] is topology
            # ROLE, INFO replication and SENTINEL read it on every listener.
            assert all(s.state.peers is topology for s in listeners)
            assert all(s.state.sentinel_name == "cache-a" for s in listeners)
            assert topology.own.address == f"127.0.0.1:{plain_port}"
            if cluster_port:
                assert all(s.state.topology is topology for s in listeners)
                assert topology.own.cluster_address == f"127.0.0.1:{cport}"
            else:  # CLUSTER SLOTS and friends answer "cluster support disabled"
                assert listeners[0].state.topology is None
        finally:
            for item in started:
                await item.stop()
    finally:
        await server.stop()
