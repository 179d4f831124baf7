"""End to end: ``raftcache serve`` without ``--max-bytes`` under a cgroup memory limit bounds
its cache at a quarter of the limit and says so in its log.

The process reads a fake cgroup mount (``RAFTCACHE_TEST_SEAM_CGROUP_ROOT``, a test seam, not
an option) holding a cgroup v2 ``memory.max`` of 1 GiB; the unit tests of every cgroup layout
are in ``tests/test_memlimit.py``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from raftcache.cli.supervisor import parent_death_hook
from raftcache.process.serve import CGROUP_ROOT_TEST_SEAM
from tests.e2e.nodes import WAIT_S, node_env, node_stats, wait_for
from tests.server.cluster import free_ports

pytestmark = pytest.mark.e2e

GIB = 1 << 30


def _alive(proc: subprocess.Popen[bytes], log: Path) -> None:
    assert proc.poll() is None, log.read_text()


async def _cache_stats(proc: subprocess.Popen[bytes], log: Path, url: str) -> dict[str, Any]:
    """The node's ``/v1/stats`` cache section, once it answers."""
    async with aiohttp.ClientSession() as http:

        async def stats() -> dict[str, Any] | None:
            _alive(proc, log)
            try:
                return await node_stats(http, url)
            except aiohttp.ClientError:
                return None

        cache: dict[str, Any] = (await wait_for(stats, "the node's /v1/stats"))["cache"]
        return cache


def test_max_bytes_defaults_from_the_cgroup_limit_and_the_log_says_so(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "memory.max").write_text(f"{GIB}\n")
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "n1.log"
    argv = [sys.executable, "-m", "raftcache", "serve", "--id", "n1"]
    argv += ["--listen", f"127.0.0.1:{port}", "--peers", f"n1={url}"]
    argv += ["--data-dir", str(tmp_path / "n1")]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**node_env(), CGROUP_ROOT_TEST_SEAM: str(root)},
            preexec_fn=parent_death_hook(),
        )
    try:
        cache = asyncio.run(_cache_stats(proc, log, url))
        assert cache["max_bytes"] == GIB // 4
        text = log.read_text()
        expected = f"max-bytes defaulted to {GIB // 4} (256 MiB) from the cgroup memory limit {GIB}"
        assert expected in text, text
        assert str(root / "memory.max") in text
    finally:
        proc.terminate()
        assert proc.wait(WAIT_S) == 0, log.read_text()
