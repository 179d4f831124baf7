"""``raftcache watch`` as a real process against a real in-process cluster: the changes under a
prefix, in commit order, one line each, from a given version; ``--count`` ends it; a version the
cluster no longer has ends it with exit code 2 and the version to re-read at."""

from __future__ import annotations

import asyncio
import base64
import sys
from pathlib import Path

import orjson
import pytest

from raftcache.cli.watch import event_line
from raftcache.client.watch import WatchEvent
from tests.server.cluster import Cluster, start_cluster
from tests.server.test_keys_v2 import cluster

__all__ = ["cluster"]  # the fixture: a running 3-node in-process cluster

pytestmark = pytest.mark.timeout(120)


async def watch_process(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "raftcache",
        "watch",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def put(cluster: Cluster, url: str, key: str, value: bytes) -> int:
    async with cluster.session.put(f"{url}/v1/keys/{key}", data=value) as resp:
        assert resp.status == 200, await resp.text()
        return int((await resp.json())["version"])


async def test_watch_prints_the_changes_under_a_prefix_in_order(cluster: Cluster) -> None:
    leader = await cluster.leader()
    start = await put(cluster, leader.url, "other", b"x")
    follower = (await cluster.followers())[0]
    proc = await watch_process(
        "app:", "--from-version", str(start), "--count", "3", "--format", "json",
        "--endpoints", follower.url,
    )  # fmt: skip
    v1 = await put(cluster, leader.url, "app:a", b"1")
    await put(cluster, leader.url, "zzz", b"outside the prefix")
    v2 = await put(cluster, leader.url, "app:b", b"\xff\xfe")
    async with cluster.session.delete(f"{leader.url}/v1/keys/app:a") as resp:
        assert resp.status == 200
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    lines = [orjson.loads(line) for line in out.decode().splitlines()]
    assert lines[0] == {"version": v1, "type": "set", "key": "app:a", "value": "1"}
    assert lines[1] == {
        "version": v2,
        "type": "set",
        "key": "app:b",
        "value_base64": base64.b64encode(b"\xff\xfe").decode(),
    }
    assert lines[2]["type"] == "delete"
    assert lines[2]["key"] == "app:a"
    assert lines[2]["version"] > v2
    assert len(lines) == 3


async def test_watch_from_compacted_history_exits_2_naming_the_version(
    tmp_path: Path,
) -> None:
    started = await start_cluster(tmp_path, size=1, watch_history=4)
    try:
        leader = await started.leader()
        for i in range(20):
            await put(started, leader.url, f"k{i}", b"v")
        proc = await watch_process("--from-version", "1", "--endpoints", leader.url)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        await started.stop()
    assert proc.returncode == 2, (out, err)
    assert out == b""
    assert b"raftcache watch: error:" in err
    assert b"re-read and watch from version" in err


def test_text_lines_name_version_type_key_and_value() -> None:
    assert event_line(WatchEvent("set", "k", 7, b"v"), "text") == "7 set k v"
    assert event_line(WatchEvent("expire", "k", 9), "text") == "9 expire k"
    line = orjson.loads(event_line(WatchEvent("set", "k", 7, b"v", expires_at=12.5), "json"))
    assert line == {"version": 7, "type": "set", "key": "k", "value": "v", "expires_at": 12.5}
