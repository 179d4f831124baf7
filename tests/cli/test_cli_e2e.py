"""End to end: ``raftcache cluster`` as real processes on loopback, the CLI and clients on it.

These start real nodes (``raftcache serve`` children of ``raftcache cluster``) and check what a
user would: the printed endpoints work, every command behaves (``member list|add|remove`` and
``leader transfer`` too: a fourth ``serve`` process is added and removed), Ctrl-C leaves no
process behind, a killed supervisor takes its children with it, and a counter incremented while
the leader is killed with SIGKILL ends at exactly the number of increments.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import raftcache
from raftcache.client import AsyncClient, RaftcacheError
from tests.cli.cluster_process import ClusterProcess, pid_alive, processes_mentioning
from tests.cli.conftest import cli
from tests.server.cluster import free_ports

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterProcess]:
    with ClusterProcess(tmp_path_factory.mktemp("cluster") / "data") as running:
        yield running


def wait_until_gone(pids: list[int], timeout_s: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if pid_alive(pid)]
        if not alive:
            return []
        time.sleep(0.1)
    return [pid for pid in pids if pid_alive(pid)]


def test_cluster_prints_nodes_and_leader(cluster: ClusterProcess) -> None:
    assert list(cluster.urls) == ["n1", "n2", "n3"]
    assert cluster.leader in cluster.urls
    assert sorted(cluster.pids) == ["n1", "n2", "n3"]
    assert all(pid_alive(pid) for pid in cluster.pids.values())
    assert all((cluster.data_dir / node).is_dir() for node in cluster.urls)


def test_cli_commands_against_the_cluster(
    cluster: ClusterProcess, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    endpoints = ["--endpoints", ",".join(cluster.endpoints), "--timeout", "20"]
    assert cli(["set", "e2e/key", "value one", *endpoints]) == 0
    assert int(capsysbinary.readouterr().out) > 0
    assert cli(["get", "e2e/key", *endpoints]) == 0
    assert capsysbinary.readouterr().out == b"value one"
    assert cli(["incr", "e2e-n", "--by", "5", *endpoints]) == 0
    assert cli(["incr", "e2e-n", *endpoints]) == 0
    assert capsysbinary.readouterr().out.split() == [b"5", b"6"]
    assert cli(["del", "e2e/key", *endpoints]) == 0
    assert cli(["get", "e2e/key", *endpoints]) == 1
    assert cli(["status", "--json", *endpoints]) == 0
    out = capsysbinary.readouterr().out.decode()
    assert out.count('"role": "leader"') == 1
    assert cli(["monitor", "--once", *endpoints]) == 0
    assert b"leader n" in capsysbinary.readouterr().out


def test_console_entry_via_python_dash_m(cluster: ClusterProcess) -> None:
    env = {**os.environ, "RAFTCACHE_ENDPOINTS": ",".join(cluster.endpoints)}
    run = [sys.executable, "-m", "raftcache"]
    done = subprocess.run([*run, "set", "m", "x"], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*run, "get", "m"], env=env, capture_output=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, b"x")
    done = subprocess.run([*run, "get", "absent"], env=env, capture_output=True, timeout=60)
    assert done.returncode == 1
    assert b"key not found" in done.stderr


def test_sync_client_against_the_cluster(cluster: ClusterProcess) -> None:
    with raftcache.Client(cluster.endpoints, timeout=20) as client:
        version = client.set("sync/a", b"\x00\xff", ttl=600)
        assert client.get_with_version("sync/a") == (b"\x00\xff", version)
        assert client.cas("sync/a", b"new", version + 1000) is None
        assert client.cas("sync/a", b"new", version) is not None
        assert client.mget(["sync/a", "sync/none"]) == [b"new", None]
        results = client.batch([("set", "sync/b", b"B"), ("get", "sync/a"), ("delete", "sync/z")])
        assert results[1:] == [b"new", False]
        assert list(client.iter_keys("sync/")) == ["sync/a", "sync/b"]
        assert client.get("sync/a", consistency="stale") in (b"new", None)
        assert client.status()["role"] in ("leader", "follower")
        assert "cache" in client.stats()
        assert client.leader is not None


def test_bench_runs_against_the_cluster(
    cluster: ClusterProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "bench.json"
    argv = ["bench", "--duration", "1", "--connections", "4", "--keys", "10", "--json", str(report)]
    assert cli([*argv, "--endpoints", ",".join(cluster.endpoints)]) == 0
    assert "ops/s" in capsys.readouterr().out
    assert report.exists()


def conn(cluster: ClusterProcess) -> list[str]:
    return ["--endpoints", ",".join(cluster.endpoints), "--timeout", "20"]


def members(cluster: ClusterProcess, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    assert cli(["member", "list", "--json", *conn(cluster)]) == 0
    rows: list[dict[str, Any]] = orjson.loads(capsys.readouterr().out)
    return rows


def leader_now(cluster: ClusterProcess, capsys: pytest.CaptureFixture[str]) -> str:
    """The leader as the nodes report it now (a transfer may have moved it since start)."""
    roles = {r["id"]: r["role"] for r in members(cluster, capsys)}
    return next(str(node) for node, role in roles.items() if role == "leader")


def test_member_list_shows_three_voters(
    cluster: ClusterProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = members(cluster, capsys)
    assert [(r["id"], r["address"]) for r in rows] == list(cluster.urls.items())
    assert sorted(r["role"] for r in rows) == ["leader", "voter", "voter"]
    assert all(isinstance(r["lag"], int) and r["lag"] >= 0 for r in rows)
    assert cli(["member", "list", *conn(cluster)]) == 0  # the table
    table = capsys.readouterr().out
    assert "learner" not in table
    assert all(url in table for url in cluster.endpoints)


def test_member_add_a_fourth_node_then_remove_it(
    cluster: ClusterProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    peers = ",".join(f"{n}={u}" for n, u in [*cluster.urls.items(), ("n4", url)])
    argv = [sys.executable, "-m", "raftcache", "serve", "--id", "n4", "--listen", url[7:]]
    argv += ["--peers", peers, "--data-dir", str(cluster.data_dir / "n4")]
    log = cluster.data_dir / "n4.log"
    with log.open("ab") as out:  # under data_dir: the fixture's exit kills it if we do not
        fourth = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:  # it waits (its pre-votes refused) until the leader adds it
        assert cli(["member", "add", "n4", url, *conn(cluster)]) == 0, log.read_text()
        assert capsys.readouterr().out == f"added n4 {url}: voters n1 n2 n3 n4\n"
        rows = members(cluster, capsys)
        assert (rows[-1]["id"], rows[-1]["address"], rows[-1]["role"]) == ("n4", url, "voter")

        assert cli(["member", "remove", "n4", *conn(cluster)]) == 0
        assert capsys.readouterr().out == "removed n4: voters n1 n2 n3\n"
        assert [r["id"] for r in members(cluster, capsys)] == ["n1", "n2", "n3"]
    finally:
        fourth.kill()
        fourth.wait(30)


def test_member_remove_refuses_a_stranger_and_the_leader_without_force(
    cluster: ClusterProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["member", "remove", "n9", *conn(cluster)]) == 1
    assert capsys.readouterr().err == (
        "raftcache member remove: error: not a member: n9 (members: n1, n2, n3)\n"
    )
    leader = leader_now(cluster, capsys)
    assert cli(["member", "remove", leader, *conn(cluster)]) == 2
    assert capsys.readouterr().err == (
        f"raftcache member remove: error: {leader} is the leader: hand leadership over first "
        "(raftcache leader transfer), or pass --force (it steps down once its removal commits)\n"
    )
    assert len(members(cluster, capsys)) == 3  # nothing was sent


def test_leader_transfer_to_a_named_follower_shows_in_status(
    cluster: ClusterProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    follower = next(n for n in cluster.urls if n != leader_now(cluster, capsys))
    assert cli(["leader", "transfer", "--to", follower, *conn(cluster)]) == 0
    assert capsys.readouterr().out == f"leader {follower}\n"
    assert cli(["status", "--json", *conn(cluster)]) == 0
    rows = orjson.loads(capsys.readouterr().out)
    assert {r["id"]: r["role"] for r in rows}[follower] == "leader"

    assert cli(["leader", "transfer", "--to", "n9", *conn(cluster)]) == 2
    err = capsys.readouterr().err
    assert err == "raftcache leader transfer: error: n9 is not a voting member\n"


async def _increment(client: AsyncClient, key: str, count: int, out: list[int]) -> None:
    for _ in range(count):
        out.append(await client.incr(key))


def test_counter_is_exact_when_the_leader_is_killed_then_sigint_stops_all(tmp_path: Path) -> None:
    """120 increments from 3 clients while the leader dies by SIGKILL: the counter ends at 120.

    Then Ctrl-C (SIGINT) on ``raftcache cluster`` stops the surviving nodes: every child is gone.
    """
    data = tmp_path / "data"
    with ClusterProcess(data) as cluster:
        returned: list[int] = []

        async def scenario() -> int:
            clients = [AsyncClient(cluster.endpoints, timeout=30) for _ in range(3)]
            try:
                workers = [
                    asyncio.ensure_future(_increment(c, "ctr", 40, returned)) for c in clients
                ]
                while len(returned) < 30:
                    await asyncio.sleep(0.01)
                assert cluster.leader is not None
                os.kill(cluster.pids[cluster.leader], signal.SIGKILL)
                await asyncio.gather(*workers)
                value = await clients[0].get("ctr")
                assert value is not None
                return int(value)
            finally:
                for c in clients:
                    await c.close()

        assert asyncio.run(scenario()) == 120
        # Exactly once from the clients' side too: no increment was applied (or seen) twice.
        assert sorted(returned) == list(range(1, 121))

        assert cluster.proc is not None
        cluster.proc.send_signal(signal.SIGINT)
        assert cluster.proc.wait(60) == 0
        assert wait_until_gone(list(cluster.pids.values())) == []
        assert processes_mentioning(str(data)) == []
        survivors = [n for n in cluster.pids if n != cluster.leader]
        stopped = "\n".join(cluster.stderr)
        for node in survivors:
            assert f"{node} (exit 0)" in stopped, cluster.output()
        assert f"{cluster.leader} (exit -9)" in stopped, cluster.output()


def test_children_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ClusterProcess(data) as cluster:
        assert cluster.proc is not None
        cluster.proc.kill()  # SIGKILL: no chance to clean up; the kernel must signal children
        cluster.proc.wait(30)
        assert wait_until_gone(list(cluster.pids.values())) == []
        assert processes_mentioning(str(data)) == []


def test_client_reports_unavailable_cluster_cleanly(tmp_path: Path) -> None:
    with pytest.raises(RaftcacheError), raftcache.Client("http://127.0.0.1:9", timeout=0.5) as c:
        c.get("k")


def test_cluster_with_redis_ports_prints_them_and_serves_redis_cluster(tmp_path: Path) -> None:
    import redis
    import redis.cluster

    with ClusterProcess(tmp_path / "data", nodes=3, resp=True) as running:
        assert sorted(running.resp) == ["n1", "n2", "n3"]
        for node, urls in running.resp.items():
            plain, clustered = (int(u.rsplit(":", 1)[1]) for u in urls)
            assert urls[0].startswith("redis://127.0.0.1:"), (node, urls)
            assert clustered == plain + 3  # consecutive ranges from each base port
        port = int(running.resp["n1"][0].rsplit(":", 1)[1])
        deadline = time.monotonic() + 60
        while True:  # the topology learns the peers' ports within a poll or two
            try:
                rc = redis.cluster.RedisCluster(host="127.0.0.1", port=port, socket_timeout=10)
                break
            except redis.RedisError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        try:
            assert rc.set("cli/e2e", "1")
            assert rc.get("cli/e2e") == b"1"
            leader_port = rc.get_node_from_key("cli/e2e").port  # type: ignore[no-untyped-call]
            assert running.leader is not None
            assert leader_port == int(running.resp[running.leader][1].rsplit(":", 1)[1])
        finally:
            rc.close()


def test_cluster_with_groups_prints_each_groups_leader_and_routes_redis_cluster(
    tmp_path: Path,
) -> None:
    import redis
    import redis.cluster

    from raftcache.slots import key_group

    with ClusterProcess(tmp_path / "data", nodes=3, resp=True, groups=4) as running:
        assert sorted(running.group_leaders) == ["g0", "g1", "g2", "g3"]
        assert set(running.group_leaders.values()) <= {"n1", "n2", "n3"}
        cluster_port = {n: int(urls[1].rsplit(":", 1)[1]) for n, urls in running.resp.items()}
        deadline = time.monotonic() + 60
        while True:  # the topology learns every group's leader within a poll or two
            try:
                rc = redis.cluster.RedisCluster(
                    host="127.0.0.1", port=cluster_port["n1"], socket_timeout=10
                )
                break
            except (redis.RedisError, redis.exceptions.RedisClusterException):
                assert time.monotonic() < deadline
                time.sleep(0.2)
        try:
            keys = [f"cli/groups/{i}" for i in range(40)]
            assert {key_group(k, 4) for k in keys} == {0, 1, 2, 3}
            for key in keys:
                assert rc.set(key, key)
            for key in keys:
                assert rc.get(key) == key.encode()
            # Each key goes straight to the store leading its group (leaders may have moved
            # since the lines were printed: check against the stores' own status).
            leaders = _group_leaders(running)
            for key in keys[:8]:
                port = rc.get_node_from_key(key).port  # type: ignore[no-untyped-call]
                assert port == cluster_port[leaders[f"g{key_group(key, 4)}"]], key
        finally:
            rc.close()


def _group_leaders(running: ClusterProcess) -> dict[str, str]:
    async def fetch() -> dict[str, str]:
        async with AsyncClient(running.endpoints) as client:
            leaders: dict[str, str] = {}
            for _, status in await client.poll("/v1/status", timeout_s=2):
                if isinstance(status, RaftcacheError):
                    continue
                for group in status["groups"]:
                    if group["hosted"] and group["leader"]:
                        leaders[group["group"]] = group["leader"]
            return leaders

    return asyncio.run(fetch())


def test_cluster_as_issue_14_states_it_serves_http_and_resp_per_store_then_ctrl_c(
    tmp_path: Path,
) -> None:
    """``raftcache cluster --nodes 3 --groups 4 --base-port P --resp-base-port R --data-dir D``
    exactly: store i prints ``ni http://…:P+i-1 redis://…:R+i-1 redis://…:R+3+i-1``, answers
    HTTP on P+i-1 and the Redis protocol on R+i-1 (any key, through any store); the
    cluster-mode ports that follow (opened because there are many groups) let redis-py's
    ``RedisCluster``, given the plain port of one store, reach each group's leader directly;
    and Ctrl-C (SIGINT) stops every store with exit 0 and leaves no process behind."""
    import redis
    import redis.cluster

    from raftcache.slots import key_group

    data = tmp_path / "data"
    with ClusterProcess(
        data, nodes=3, resp=True, resp_cluster=False, groups=4, own_group=True
    ) as running:
        http, resp = running.base_port, running.resp_base_port
        assert resp is not None
        assert running.argv[3:] == [
            "cluster", "--nodes", "3", "--groups", "4", "--base-port", str(http),
            "--resp-base-port", str(resp), "--data-dir", str(data),
        ]  # fmt: skip
        stores = [f"n{i}" for i in (1, 2, 3)]
        lines = [line for line in running.stdout if line.split(" ", 1)[0] in stores]
        cluster = resp + 3
        assert lines == [
            f"n{i} http://127.0.0.1:{http + i - 1} redis://127.0.0.1:{resp + i - 1} "
            f"redis://127.0.0.1:{cluster + i - 1}"
            for i in (1, 2, 3)
        ], running.output()
        groups = [line.split() for line in running.stdout if line.startswith("group ")]
        assert [g[1] for g in groups] == ["g0", "g1", "g2", "g3"]
        for _, _, _, leader, url in groups:  # group g0 leader n2 http://127.0.0.1:P+1
            assert url == running.urls[leader], running.output()

        keys = [f"issue14/{i}" for i in range(12)]
        assert {key_group(k, 4) for k in keys} == {0, 1, 2, 3}
        for i, store in enumerate(stores, start=1):
            with raftcache.Client([f"http://127.0.0.1:{http + i - 1}"], timeout=20) as client:
                status = client.status()
            assert status["sharding"] == {"groups": 4, "store": store}
            assert status["resp"]["address"] == f"127.0.0.1:{resp + i - 1}"
            assert status["resp"]["cluster_address"] == f"127.0.0.1:{cluster + i - 1}"
            r = redis.Redis(port=resp + i - 1, socket_timeout=20)
            try:
                assert r.ping()
                for key in keys:  # every group, through this store (the plain port forwards)
                    assert r.set(key, f"{key} via {store}")
                assert r.mget(keys) == [f"{k} via {store}".encode() for k in keys]
                assert r.dbsize() == len(keys)
            finally:
                r.close()

        # RedisCluster given one store's plain port learns the cluster-mode ports (which
        # send MOVED to a group's leader; other tests follow it through leader changes).
        rc = redis.cluster.RedisCluster(host="127.0.0.1", port=resp, socket_timeout=20)
        try:
            ports = sorted(n.port for n in rc.get_nodes())  # type: ignore[no-untyped-call]
            assert ports == [cluster, cluster + 1, cluster + 2]
            for key in keys:
                assert rc.get(key) == f"{key} via n3".encode()
        finally:
            rc.close()

        # Each local store stands for a machine of its own: its label is its id, as the
        # meta group records it once it registered.
        deadline = time.monotonic() + 30
        while True:
            listed = subprocess.run(
                [sys.executable, "-m", "raftcache", "store", "list", "--endpoints",
                 f"http://127.0.0.1:{http}"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            if all(f"{s} host={s} " in listed.stdout for s in stores):
                break
            assert time.monotonic() < deadline, (listed.stdout, listed.stderr)
            time.sleep(0.3)

        running.ctrl_c()  # SIGINT to its process group, which the stores are not in
        assert running.proc is not None
        assert running.proc.wait(60) == 0, running.output()
        assert wait_until_gone(list(running.pids.values())) == []
        assert processes_mentioning(str(data)) == []  # nothing left for the fixture to kill
        stopped = [line for line in running.stderr if "stopped n" in line]
        assert stopped == ["raftcache cluster: stopped n1 (exit 0), n2 (exit 0), n3 (exit 0)"], (
            running.output()
        )
