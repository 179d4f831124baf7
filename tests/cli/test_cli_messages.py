"""What an operator reads when a client command fails: a wrong token, a missing key, a refused
connection, a cluster without a leader, bytes that are not UTF-8 — each one line on stderr in
plain words and a documented exit code, checked against in-process nodes over real HTTP
(``tests.server.cluster``) and, where the terminal or argv bytes matter, real processes."""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tests.cli.conftest import cli
from tests.client.client_fakes import closed_port_url
from tests.server.cluster import Cluster, start_cluster

UNAUTHORIZED = (
    "unauthorized: the client token is missing or wrong (--token or RAFTCACHE_CLIENT_TOKEN)"
)
NO_LEADER = "no leader: the cluster has no quorum right now"


async def cli_async(*argv: str) -> int:
    """The CLI in a worker thread: it runs its own event loop (asyncio.run)."""
    return await asyncio.to_thread(cli, list(argv))


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = await start_cluster(tmp_path / "nodes", client_token="secret")
    try:
        await cluster.leader()
        yield cluster
    finally:
        await cluster.stop()


def endpoints(cluster: Cluster) -> str:
    return ",".join(s.url for s in cluster.servers)


async def test_a_401_is_a_token_problem_not_an_unreachable_cluster(
    secured: Cluster, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = endpoints(secured)
    for token in ([], ["--token", "wrong"]):
        assert await cli_async("status", "--endpoints", urls, *token) == 2
        assert capsys.readouterr().err == f"raftcache status: error: {UNAUTHORIZED}\n"
    assert await cli_async("status", "--json", "--endpoints", urls) == 2
    captured = capsys.readouterr()
    rows = orjson.loads(captured.out)
    assert [r["role"] for r in rows] == ["unauthorized"] * 3
    assert {r["error"] for r in rows} == {UNAUTHORIZED}
    assert captured.err == f"raftcache status: error: {UNAUTHORIZED}\n"

    # monitor stops at the first poll (polling again cannot help) and says why.
    assert await cli_async("monitor", "--count", "5", "--compact", "--endpoints", urls) == 2
    captured = capsys.readouterr()
    assert captured.out.count(" U t- ") == 3  # one poll, every node "unauthorized"
    assert captured.err == f"raftcache monitor: error: {UNAUTHORIZED}\n"

    assert await cli_async("get", "k", "--endpoints", urls) == 2
    assert capsys.readouterr().err == f"raftcache get: error: {UNAUTHORIZED}\n"

    # With the token (here from the environment) all of it works.
    monkeypatch.setenv("RAFTCACHE_CLIENT_TOKEN", "secret")
    assert await cli_async("status", "--json", "--endpoints", urls) == 0
    assert "leader" in [r["role"] for r in orjson.loads(capsys.readouterr().out)]
    assert await cli_async("monitor", "--once", "--endpoints", urls) == 0
    assert "leader n" in capsys.readouterr().out


async def test_del_and_get_of_a_missing_key_exit_alike(
    secured: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = ["--endpoints", endpoints(secured), "--token", "secret"]
    assert await cli_async("get", "nope", *conn) == 1
    assert capsys.readouterr() == ("", "raftcache get: error: key not found: nope\n")
    assert await cli_async("del", "nope", *conn) == 1
    assert capsys.readouterr() == ("", "raftcache del: error: key not found: nope\n")
    assert await cli_async("set", "there", "v", *conn) == 0
    capsys.readouterr()
    assert await cli_async("del", "there", *conn) == 0
    assert capsys.readouterr() == ("deleted\n", "")


def test_connection_refused_names_the_endpoints(capsys: pytest.CaptureFixture[str]) -> None:
    one, two = closed_port_url(), closed_port_url()
    assert cli(["get", "k", "--endpoints", one, "--timeout", "0.5"]) == 3
    assert capsys.readouterr().err == (
        f"raftcache get: error: cannot connect to {one} (connection refused)\n"
    )
    assert cli(["set", "k", "v", "--endpoints", f"{one},{two}", "--timeout", "0.5"]) == 3
    assert capsys.readouterr().err == (
        f"raftcache set: error: cannot connect to {one}, {two} (connection refused)\n"
    )
    assert cli(["status", "--json", "--endpoints", one, "--timeout", "0.5"]) == 3
    captured = capsys.readouterr()
    assert orjson.loads(captured.out)[0]["error"] == f"cannot connect to {one} (connection refused)"
    assert captured.err == "raftcache status: error: no node answered\n"


async def test_no_leader_is_a_503_nothing_written_not_an_unknown_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = await start_cluster(tmp_path / "nodes", leader_wait_s=0.4)
    try:
        await cluster.leader()
        survivor, *others = cluster.servers
        for server in others:
            await server.stop()
        async with asyncio.timeout(10):  # it steps down / stops hearing from a leader
            while survivor.node.leader_id is not None:
                await asyncio.sleep(0.05)
        conn = ["--endpoints", survivor.url, "--timeout", "1.6"]
        for argv in (["set", "k", "v"], ["del", "k"], ["incr", "n"]):
            assert await cli_async(*argv, *conn) == 3
            err = capsys.readouterr().err
            assert err == f"raftcache {argv[0]}: error: {NO_LEADER}; nothing was written\n"
        assert await cli_async("get", "k", *conn) == 3
        assert capsys.readouterr().err == f"raftcache get: error: {NO_LEADER}\n"
    finally:
        await cluster.stop()


def test_arguments_that_are_not_utf8_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    raw = os.fsdecode(b"\xff")  # what Python makes of such a byte in argv
    dead = ["--endpoints", closed_port_url()]  # refused before any request
    for argv, message in (
        (["get", raw, *dead], "argument key: not valid UTF-8: b'\\xff'"),
        (["del", raw, *dead], "argument key: not valid UTF-8: b'\\xff'"),
        (["keys", "--prefix", raw, *dead], "argument --prefix: not valid UTF-8: b'\\xff'"),
        (["get", "k", "--token", raw, *dead], "argument --token: not valid UTF-8: b'\\xff'"),
        (
            ["set", "k", raw, *dead],
            "argument value: not valid UTF-8: b'\\xff' (to store other bytes, give VALUE '-' "
            "and pipe them on stdin)",
        ),
    ):
        with pytest.raises(SystemExit) as info:
            cli(argv)
        assert info.value.code == 2
        assert capsys.readouterr().err.splitlines()[-1] == f"raftcache {argv[0]}: error: {message}"


def test_non_utf8_bytes_from_a_real_shell(tmp_path: Path) -> None:
    """The same through ``python -m raftcache`` with real argv and environment bytes."""
    run = [sys.executable, "-m", "raftcache"]
    dead = ["--endpoints", closed_port_url()]
    done = subprocess.run([*run, "set", "k", b"caf\xe9", *dead], capture_output=True, timeout=60)
    assert done.returncode == 2
    assert b"Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        b"raftcache set: error: argument value: not valid UTF-8: b'caf\\xe9' (to store other "
        b"bytes, give VALUE '-' and pipe them on stdin)"
    )
    env = {**os.environb, b"RAFTCACHE_CLIENT_TOKEN": b"\xff"}
    done = subprocess.run([*run, "get", "k", *dead], env=env, capture_output=True, timeout=60)
    assert (done.returncode, done.stderr) == (
        2,
        b"raftcache get: error: RAFTCACHE_CLIENT_TOKEN is not valid UTF-8\n",
    )


async def test_get_ends_with_a_newline_on_a_terminal_only(
    secured: Cluster,
) -> None:
    env = {**os.environ, "RAFTCACHE_ENDPOINTS": endpoints(secured)}
    env["RAFTCACHE_CLIENT_TOKEN"] = "secret"
    run = [sys.executable, "-m", "raftcache"]
    done = await asyncio.to_thread(
        subprocess.run, [*run, "set", "g", "hello"], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr

    piped = await asyncio.to_thread(
        subprocess.run, [*run, "get", "g"], env=env, capture_output=True, timeout=60
    )
    assert (piped.returncode, piped.stdout) == (0, b"hello")

    leader, follower = pty.openpty()
    try:
        code = await asyncio.to_thread(
            subprocess.call, [*run, "get", "g"], env=env, stdout=follower, timeout=60
        )
        os.close(follower)
        follower = -1
        out = b""
        while True:
            try:
                chunk = os.read(leader, 1024)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    assert code == 0
    assert out == b"hello\r\n"  # the terminal turns the newline into CR LF
