"""``raftcache snapshot save|restore|inspect`` in-process, against in-process nodes over real HTTP
(the 3-process round trip is tests/e2e/test_backup.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from raftcache.cache.backup import verify_backup
from raftcache.cache.bundle import encode_bundle, verify_bundle
from tests.cache.test_backup_bundle import group_backup
from tests.cli.conftest import cli
from tests.client.sharded_stores import keys_of, start_stores
from tests.e2e.nodes import get_key, key_url
from tests.e2e.test_backup import put
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


# --- a sharded cluster: a bundle of every group ----------------------------------------------

GROUPS = 4


async def test_sharded_save_is_a_bundle_restored_group_by_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stores = await start_stores(3, GROUPS)
    try:
        http, urls = stores.session, stores.endpoints
        endpoints = ",".join(urls)
        keys = {g: keys_of(g, GROUPS, 3, prefix=f"s{g}-") for g in range(GROUPS)}
        for g, group_keys in keys.items():
            for key in group_keys:
                await put(http, urls[g % 3], key, f"saved {key}".encode())

        bundle = tmp_path / "all.bundle"
        assert await cli_async("snapshot", "save", str(bundle), "--endpoints", endpoints) == 0
        summary = orjson.loads(capsys.readouterr().out)
        assert summary["groups"] == GROUPS
        assert [p["group"] for p in summary["parts"]] == ["g0", "g1", "g2", "g3"]
        assert [p["keys"] for p in summary["parts"]] == [3, 3, 3, 3]
        # Each part taken on its group's leader (the CLI found it as `raftcache shards` does).
        leaders = stores.leaders()
        assert [p["node"].split(".")[0] for p in summary["parts"]] == [
            leaders[f"g{g}"] for g in range(GROUPS)
        ]
        info, parts = verify_bundle(bundle.read_bytes())
        assert info.groups == GROUPS
        assert [p.name for p in await asyncio.to_thread(_listing, tmp_path)] == ["all.bundle"]

        assert await cli_async("snapshot", "inspect", str(bundle)) == 0
        inspected = orjson.loads(capsys.readouterr().out)
        assert inspected["verified"] is True
        assert (inspected["keys"], inspected["groups"]) == (12, GROUPS)
        assert inspected["sha256"] == summary["sha256"]

        for group_keys in keys.values():  # change every group after the save
            await put(http, urls[0], group_keys[0], b"changed")
            async with http.delete(key_url(urls[1], group_keys[1])) as resp:
                assert resp.status == 200
        assert await cli_async("snapshot", "restore", str(bundle), "--endpoints", endpoints) == 0
        out = capsys.readouterr()
        restored = orjson.loads(out.out)
        assert restored["restored"] == ["g0", "g1", "g2", "g3"]
        assert restored["not_restored"] == {}
        assert "restored group g3: backup of index" in out.err
        for group_keys in keys.values():
            for key in group_keys:
                assert (await get_key(http, urls[2], key))[:2] == (200, f"saved {key}".encode())

        # One group alone: a plain backup file, restored with --group into that group only.
        one = tmp_path / "g2.backup"
        code = await cli_async(
            "snapshot", "save", str(one), "--group", "g2", "--endpoints", endpoints
        )
        assert code == 0
        assert orjson.loads(capsys.readouterr().out)["group"] == "g2"
        backup_info, _ = verify_backup(one.read_bytes())
        assert await cli_async("snapshot", "inspect", str(one)) == 0
        assert orjson.loads(capsys.readouterr().out)["index"] == backup_info.index
        await put(http, urls[0], keys[2][0], b"changed again")
        code = await cli_async(
            "snapshot", "restore", str(one), "--group", "g2", "--endpoints", endpoints
        )
        assert code == 0, capsys.readouterr().err
        assert "into group g2" in capsys.readouterr().err
        assert (await get_key(http, urls[1], keys[2][0]))[:2] == (
            200,
            f"saved {keys[2][0]}".encode(),
        )

        # A plain file without --group, a group the cluster lacks: refused before sending.
        code = await cli_async("snapshot", "restore", str(one), "--endpoints", endpoints)
        assert code == 2
        assert "name the group it restores into with --group gN" in capsys.readouterr().err
        code = await cli_async(
            "snapshot", "save", str(tmp_path / "x"), "--group", "g4", "--endpoints", endpoints
        )
        assert code == 2
        assert "the cluster has 4 groups (g0 … g3): there is no g4" in capsys.readouterr().err

        # A bundle of another G: refused naming both, nothing sent.
        two = tmp_path / "two.bundle"
        two.write_bytes(encode_bundle(0.0, [parts[0].data, parts[1].data]))
        code = await cli_async("snapshot", "restore", str(two), "--endpoints", endpoints)
        assert code == 2
        assert "a bundle of 2 groups and the cluster has 4" in capsys.readouterr().err

        # Parts in the wrong groups: g1 and g2 refused by the stores, g0 and g3 restored; the
        # CLI says which, and exits with the refusal's code.
        await put(http, urls[0], keys[0][0], b"changed")
        swapped = tmp_path / "swapped.bundle"
        datas = [p.data for p in parts]
        swapped.write_bytes(encode_bundle(0.0, [datas[0], datas[2], datas[1], datas[3]]))
        code = await cli_async("snapshot", "restore", str(swapped), "--endpoints", endpoints)
        out = capsys.readouterr()
        assert code == 2
        assert "restored: g0, g3; NOT restored: g1, g2" in out.err
        assert "group g1 NOT restored: 400" in out.err
        assert orjson.loads(out.out)["restored"] == ["g0", "g3"]
        assert (await get_key(http, urls[0], keys[0][0]))[:2] == (
            200,
            f"saved {keys[0][0]}".encode(),
        )
    finally:
        await stores.stop()


def _listing(directory: Path) -> list[Path]:
    """Every file of ``directory``: no temporary file is left once ``save`` is done."""
    return sorted(directory.iterdir())


def test_bad_bundles_are_refused_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (port,) = free_ports(1)  # nothing listens there: a request would fail with exit 3
    endpoint = f"http://127.0.0.1:{port}"
    good = encode_bundle(1.0, [group_backup(g, 4) for g in range(2)])
    cases = {
        "truncated": (good[:-30], "truncated bundle"),
        "newer": (good.replace(b"BUNDLE/1", b"BUNDLE/3", 1), "bundle format '3' is not supported"),
        "corrupt": (_flip(good, len(good) // 2), "checksum mismatch"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / f"{name}.bundle"
        path.write_bytes(data)
        assert run("snapshot", "restore", str(path), "--endpoints", endpoint) == 1, name
        assert message in capsys.readouterr().err, name
        assert run("snapshot", "inspect", str(path)) == 1, name
        assert message in capsys.readouterr().err, name


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x20]) + data[at + 1 :]
