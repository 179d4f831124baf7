"""``raftcache snapshot save|restore|inspect`` in-process, against in-process nodes over real HTTP
(the 3-process round trip is tests/e2e/test_backup.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from raftcache.cache.backup import verify_backup
from tests.cli.conftest import cli
from tests.server.cluster import free_ports, start_cluster


def run(*argv: str) -> int:
    """The CLI in a worker thread: it runs its own event loop (asyncio.run)."""
    return cli(list(argv))


async def cli_async(*argv: str) -> int:
    return await asyncio.to_thread(run, *argv)


async def test_save_inspect_and_restore_through_a_follower(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = await start_cluster(tmp_path / "nodes", client_token="secret")
    try:
        leader = await cluster.leader()
        headers = {"Authorization": "Bearer secret"}
        for i in range(5):
            url = f"{leader.url}/v1/keys/k{i}"
            async with cluster.session.put(url, data=b"v%d" % i, headers=headers) as resp:
                assert resp.status == 200
        follower = next(s for s in cluster.servers if s is not leader)
        backup = tmp_path / "out" / "b.backup"
        backup.parent.mkdir()
        # Only a follower is named: the CLI finds no leader among its endpoints and lets the
        # follower forward.
        code = await cli_async(
            "snapshot", "save", str(backup), "--url", follower.url, "--token", "secret"
        )
        out = capsys.readouterr()
        assert code == 0, out.err
        summary = orjson.loads(out.out)
        assert summary["keys"] == 5
        assert summary["node"] == leader.node.node_id
        info, _ = verify_backup(backup.read_bytes())
        assert info.index == summary["index"]
        assert sorted(p.name for p in backup.parent.iterdir()) == ["b.backup"]

        assert await cli_async("snapshot", "inspect", str(backup)) == 0
        assert orjson.loads(capsys.readouterr().out)["verified"] is True

        async with cluster.session.delete(f"{leader.url}/v1/keys/k0", headers=headers) as resp:
            assert resp.status == 200
        endpoints = ",".join(s.url for s in cluster.servers)
        code = await cli_async(
            "snapshot", "restore", str(backup), "--endpoints", endpoints, "--token", "secret"
        )
        out = capsys.readouterr()
        assert code == 0, out.err
        assert orjson.loads(out.out)["keys"] == 5
        async with cluster.session.get(f"{leader.url}/v1/keys/k0", headers=headers) as resp:
            assert resp.status == 200
            assert await resp.read() == b"v0"

        # Without the token: refused (exit 2), and nothing is written.
        denied = tmp_path / "denied.backup"
        assert await cli_async("snapshot", "save", str(denied), "--endpoints", endpoints) == 2
        assert "401" in capsys.readouterr().err
        assert not denied.exists()
    finally:
        await cluster.stop()


def test_bad_files_are_refused_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (port,) = free_ports(1)  # nothing listens there: a request would fail with exit 3
    bad = tmp_path / "bad.backup"
    bad.write_bytes(b"not a backup at all")
    endpoint = f"http://127.0.0.1:{port}"
    assert run("snapshot", "restore", str(bad), "--endpoints", endpoint) == 1
    assert "not a raftcache backup" in capsys.readouterr().err
    assert run("snapshot", "inspect", str(bad)) == 1
    assert "not a raftcache backup" in capsys.readouterr().err
    assert run("snapshot", "inspect", str(tmp_path / "missing")) == 2
    capsys.readouterr()


def test_an_unreachable_cluster_is_exit_3_and_leaves_no_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (port,) = free_ports(1)
    target = tmp_path / "b.backup"
    code = run("snapshot", "save", str(target), "--endpoints", f"http://127.0.0.1:{port}")
    assert code == 3
    assert "no node answered" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert run("snapshot", "save", str(tmp_path), "--endpoints", "http://127.0.0.1:1") == 2
    assert "is a directory" in capsys.readouterr().err
