"""End to end: ``raftcache snapshot save`` / ``restore`` against three real ``raftcache serve``
processes, through the real CLI (a child process) and the real HTTP endpoints.

- save, write more, restore: every node then holds exactly the saved keys and values (no key
  written after the backup survives), each at the restore's version; and so it stays after every
  node is stopped and started again (the restore is in the log and snapshots, fsynced);
- a truncated, corrupt or foreign file is refused by the CLI before anything is sent (exit 1),
  and by the endpoint with a 400 naming the problem; the cluster keeps serving meanwhile;
- a sharded cluster (``--groups 4``) saves into one bundle and restores from it, every group's
  keys back with their values and expiry times; a bundle of another number of groups is
  refused before anything is sent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis

from raftcache.cache.bundle import encode_bundle, verify_bundle
from tests.cli.conftest import cli
from tests.e2e.nodes import (
    ProcessCluster,
    eventually_equal,
    get_key,
    key_url,
    node_env,
    wait_applied,
    wait_for_leader,
)
from tests.e2e.test_store_processes import FAST, GROUPS, group_leaders
from tests.store.stores_http import keys_of

pytestmark = pytest.mark.e2e

CLI_TIMEOUT_S = 120.0


async def run_cli(*argv: str) -> tuple[int, str, str]:
    """``python -m raftcache ARGV`` as a child process: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "raftcache",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=node_env(),
    )
    try:
        async with asyncio.timeout(CLI_TIMEOUT_S):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def temporary_files(directory: Path) -> list[Path]:
    """What ``snapshot save`` may have left behind: nothing, once it has finished."""
    return list(directory.glob(".*.tmp"))


async def put(http: aiohttp.ClientSession, base: str, key: str, value: bytes, **q: str) -> None:
    async with http.put(key_url(base, key), data=value, params=q) as resp:
        assert resp.status == 200, await resp.text()


async def contents(http: aiohttp.ClientSession, base: str) -> dict[str, bytes]:
    """Every key and value one node holds, read from its own state (``stale``)."""
    async with http.get(
        base + "/v1/keys", params={"limit": "1000", "consistency": "stale"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        keys: list[str] = (await resp.json())["keys"]
    async with http.post(
        base + "/v1/mget", params={"consistency": "stale"}, json={"keys": keys}
    ) as resp:
        assert resp.status == 200, await resp.text()
        values = (await resp.json())["values"]
    return {k: base64.b64decode(v) for k, v in zip(keys, values, strict=True) if v is not None}


async def versions(http: aiohttp.ClientSession, base: str, keys: list[str]) -> set[int]:
    found = set()
    for key in keys:
        async with http.get(key_url(base, key), params={"consistency": "stale"}) as resp:
            assert resp.status == 200, key
            found.add(int(resp.headers["ETag"].strip('"')))
    return found


async def write_saved_state(http: aiohttp.ClientSession, base: str) -> None:
    for i in range(60):
        ttl = {"ttl": "3600"} if i % 4 == 0 else {}
        await put(http, base, f"user/{i:03d}", f"saved-{i}".encode() * (i % 5 + 1), **ttl)
    for _ in range(3):
        async with http.post(key_url(base, "hits") + "/incr") as resp:
            assert resp.status == 200


async def write_more(http: aiohttp.ClientSession, base: str) -> None:
    for i in range(0, 60, 3):
        await put(http, base, f"user/{i:03d}", b"changed after the backup")
    for i in range(1, 60, 7):
        async with http.delete(key_url(base, f"user/{i:03d}")) as resp:
            assert resp.status == 200
    for i in range(20):
        await put(http, base, f"late/{i}", b"written after the backup")


async def all_nodes_hold(
    cluster: ProcessCluster, http: aiohttp.ClientSession, expected: dict[str, bytes], index: int
) -> None:
    for node in cluster.nodes.values():
        await wait_applied(cluster, http, node, index)

        async def actual(url: str = node.url) -> dict[str, bytes]:
            return await contents(http, url)

        await eventually_equal(
            actual, expected, f"{node.node_id} holds the backup", cluster=cluster
        )


async def test_save_write_restore_and_restart(tmp_path: Path) -> None:
    backup = tmp_path / "cache.backup"
    with ProcessCluster(tmp_path / "nodes") as cluster:
        cluster.start_all()
        endpoints = ",".join(cluster.endpoints)
        async with aiohttp.ClientSession() as http:
            leader = await wait_for_leader(cluster, http)
            await write_saved_state(http, leader.url)
            saved = await contents(http, leader.url)
            assert len(saved) == 61

            code, out, err = await run_cli(
                "snapshot", "save", str(backup), "--endpoints", endpoints
            )
            assert code == 0, err
            summary: dict[str, Any] = orjson.loads(out)
            assert summary["keys"] == 61
            assert summary["node"] == leader.node_id
            assert temporary_files(tmp_path) == []
            code, out, err = await run_cli("snapshot", "inspect", str(backup))
            assert code == 0, err
            assert orjson.loads(out)["index"] == summary["index"]

            await write_more(http, leader.url)
            assert await contents(http, leader.url) != saved

            code, out, err = await run_cli(
                "snapshot", "restore", str(backup), "--endpoints", endpoints
            )
            assert code == 0, err
            result: dict[str, Any] = orjson.loads(out)
            assert result["keys"] == 61
            assert result["backup"]["index"] == summary["index"]
            await all_nodes_hold(cluster, http, saved, result["version"])
            for node in cluster.nodes.values():
                assert await versions(http, node.url, ["user/000", "hits"]) == {result["version"]}

            # Writes go on after the restore, on top of the restored data.
            async with http.post(key_url(leader.url, "hits") + "/incr") as resp:
                assert resp.status == 200
                assert (await resp.json())["value"] == 4
            saved["hits"] = b"4"

        # A full restart: every node stops, then all start again from their data directories.
        for node_id in cluster.nodes:
            assert cluster.terminate(node_id) == 0, cluster.logs()
        cluster.start_all()
        async with aiohttp.ClientSession() as http:
            leader = await wait_for_leader(cluster, http)
            async with http.get(leader.url + "/v1/status") as resp:
                commit = (await resp.json())["commit_index"]
            await all_nodes_hold(cluster, http, saved, commit)


async def test_bad_files_are_refused_and_the_cluster_keeps_serving(tmp_path: Path) -> None:
    backup = tmp_path / "good.backup"
    with ProcessCluster(tmp_path / "nodes") as cluster:
        cluster.start_all()
        endpoints = ",".join(cluster.endpoints)
        async with aiohttp.ClientSession() as http:
            leader = await wait_for_leader(cluster, http)
            for i in range(10):
                await put(http, leader.url, f"k{i}", b"kept")
            code, _, err = await run_cli("snapshot", "save", str(backup), "--endpoints", endpoints)
            assert code == 0, err
            good = backup.read_bytes()
            flipped = bytearray(good)
            flipped[len(good) // 2] ^= 0x01
            bad_files = {
                "truncated": (good[: len(good) - 40], "truncated"),
                "corrupt": (bytes(flipped), "checksum"),
                "foreign": (b"PK\x03\x04" + b"\x00" * 200, "not a raftcache backup"),
                "newer": (good.replace(b"BACKUP/1", b"BACKUP/9", 1), "not supported"),
            }
            await put(http, leader.url, "k0", b"after the backup")
            for name, (data, problem) in bad_files.items():
                path = tmp_path / f"{name}.backup"
                path.write_bytes(data)
                code, _, err = await run_cli(
                    "snapshot", "restore", str(path), "--endpoints", endpoints
                )
                assert code == 1, (name, err)
                assert problem in err, (name, err)
                # Straight to the endpoint, on a follower and on the leader alike.
                for node in cluster.nodes.values():
                    async with http.post(node.url + "/v1/restore", data=data) as resp:
                        assert resp.status == 400, (name, await resp.text())
                        body = await resp.json()
                        assert problem in body["error"], (name, body)
            # Nothing was restored, and the cluster still takes writes.
            await put(http, leader.url, "k1", b"still serving")
            now = await contents(http, leader.url)
            assert now["k0"] == b"after the backup"
            assert now["k1"] == b"still serving"


async def test_a_sharded_cluster_round_trips_through_one_bundle(tmp_path: Path) -> None:
    """Three ``--groups 4`` stores: keys (some with a TTL) in every group, ``snapshot save``
    writes one bundle, keys are overwritten and deleted and new ones written, ``snapshot
    restore`` puts every group back — each key with its value and its expiry, nothing written
    after the save left. A bundle of another number of groups is refused, naming both."""
    bundle = tmp_path / "cluster.bundle"
    cluster = ProcessCluster(tmp_path / "stores", 3, extra_args=["--groups", str(GROUPS), *FAST])
    resp_ports = cluster.give_resp_ports()
    with cluster:
        cluster.start_all()
        endpoints = ",".join(cluster.endpoints)
        redis_client = redis.Redis(port=resp_ports["n2"], socket_timeout=10)
        try:
            async with aiohttp.ClientSession() as http:
                await group_leaders(cluster, http)
                urls = cluster.endpoints
                saved: dict[str, bytes] = {}
                for group in range(GROUPS):
                    for i, key in enumerate(keys_of(group, GROUPS, 4, prefix=f"g{group}/")):
                        ttl = {"ttl": "3600"} if i % 2 == 0 else {}
                        saved[key] = f"saved {key}".encode()
                        await put(http, urls[i % 3], key, saved[key], **ttl)
                expiry = {key: redis_client.pttl(key) for key in saved}
                assert sorted(set(expiry.values()))[0] == -1  # no TTL: -1
                assert all(v == -1 or 3_000_000 < v <= 3_600_000 for v in expiry.values())

                code, out, err = await run_cli(
                    "snapshot", "save", str(bundle), "--endpoints", endpoints
                )
                assert code == 0, err
                summary: dict[str, Any] = orjson.loads(out)
                assert summary["groups"] == GROUPS
                assert [p["keys"] for p in summary["parts"]] == [4] * GROUPS
                assert temporary_files(tmp_path) == []

                for n, key in enumerate(saved):  # overwrite (dropping the TTL) or delete
                    if n % 2:
                        async with http.delete(key_url(urls[n % 3], key)) as resp:
                            assert resp.status == 200
                    else:
                        await put(http, urls[n % 3], key, b"changed after the save")
                for group in range(GROUPS):
                    (late,) = keys_of(group, GROUPS, 1, prefix=f"late{group}/")
                    await put(http, urls[0], late, b"written after the save")

                code, out, err = await run_cli(
                    "snapshot", "restore", str(bundle), "--endpoints", endpoints
                )
                assert code == 0, err
                restored = orjson.loads(out)
                assert restored["restored"] == [f"g{g}" for g in range(GROUPS)]
                assert [restored["results"][f"g{g}"]["keys"] for g in range(GROUPS)] == [4] * 4
                for n, (key, value) in enumerate(saved.items()):
                    status, body, _ = await get_key(http, urls[n % 3], key)
                    assert (status, body) == (200, value), key
                    left = redis_client.pttl(key)
                    if expiry[key] == -1:
                        assert left == -1, key
                    else:  # the same absolute deadline: no longer than when it was saved
                        assert 0 < left <= expiry[key], (key, left, expiry[key])
                async with http.get(urls[1] + "/v1/keys", params={"limit": "100"}) as resp:
                    assert sorted((await resp.json())["keys"]) == sorted(saved)

                # A bundle of two groups into this cluster of four: refused, nothing sent.
                _, parts = verify_bundle(bundle.read_bytes())
                two = tmp_path / "two.bundle"
                two.write_bytes(encode_bundle(0.0, [parts[0].data, parts[1].data]))
                await put(http, urls[0], next(iter(saved)), b"kept")
                # (In-process, in a worker thread: one more child process proves nothing more.)
                argv = ["snapshot", "restore", str(two), "--endpoints", endpoints]
                with contextlib.redirect_stderr(io.StringIO()) as err_text:
                    assert await asyncio.to_thread(cli, argv) == 2
                assert "a bundle of 2 groups and the cluster has 4" in err_text.getvalue()
                status, body, _ = await get_key(http, urls[2], next(iter(saved)))
                assert (status, body) == (200, b"kept")
        finally:
            redis_client.close()
