"""redis-cli and redis-benchmark (Debian's redis-tools) against a real cluster, when installed.

The cluster runs in this process's event loop, so the tools run as asynchronous subprocesses.
"""

from __future__ import annotations

import asyncio
import re
import shutil

import pytest

from .cluster import RespCluster

pytestmark = pytest.mark.asyncio(loop_scope="module")

REDIS_CLI = shutil.which("redis-cli")
REDIS_BENCHMARK = shutil.which("redis-benchmark")
needs_cli = pytest.mark.skipif(
    REDIS_CLI is None, reason="redis-cli not installed (apt-get install redis-tools)"
)
needs_benchmark = pytest.mark.skipif(
    REDIS_BENCHMARK is None, reason="redis-benchmark not installed (apt-get install redis-tools)"
)


async def run(*argv: str, stdin: bytes | None = None, timeout: float = 60) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate(stdin)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@needs_cli
async def test_redis_cli_against_leader_and_follower(resp_cluster: RespCluster) -> None:
    assert REDIS_CLI is not None
    follower = str(await resp_cluster.follower_port())
    leader = str(await resp_cluster.leader_port())
    assert await run(REDIS_CLI, "-p", follower, "SET", "cli:k", "hello world") == (0, "OK\n")
    assert await run(REDIS_CLI, "-p", leader, "GET", "cli:k") == (0, "hello world\n")
    assert await run(REDIS_CLI, "-3", "-p", follower, "INCRBY", "cli:n", "5") == (0, "5\n")
    code, out = await run(REDIS_CLI, "-p", follower, "INFO", "raft")
    assert code == 0
    assert "raft_role:follower" in out
    # Interactive-style input through stdin (redis-cli fetches COMMAND DOCS first when a tty).
    code, out = await run(
        REDIS_CLI, "-p", leader, stdin=b"PING\nMGET cli:k cli:none\nTTL cli:k\nDBSIZE\n"
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[:4] == ["PONG", "hello world", "", "-1"]
    assert int(lines[4]) >= 2


@needs_benchmark
async def test_redis_benchmark_runs_against_the_cluster(resp_cluster: RespCluster) -> None:
    assert REDIS_BENCHMARK is not None
    port = str(await resp_cluster.follower_port())
    code, out = await run(
        REDIS_BENCHMARK, "-p", port, "-t", "set,get,incr,mset", "-n", "400", "-c", "8",
        "-P", "4", "-q",
    )  # fmt: skip
    assert code == 0, out
    rates = dict(re.findall(r"(\w+)(?: \(10 keys\))?: ([\d.]+) requests per second", out))
    assert set(rates) == {"SET", "GET", "INCR", "MSET"}, out
    assert all(float(rate) > 0 for rate in rates.values())
