"""End to end: a plain install serves on the fast path, and a node whose httptools and uvloop
cannot be imported still serves — on aiohttp and asyncio's loop.

httptools and uvloop are ordinary dependencies (uvloop only where it has wheels), so every
install is the fast one; the fallback stays for a platform without uvloop or an install that
lost them. Here a real ``raftcache serve`` process runs behind an import blocker (the modules
set to None in ``sys.modules`` before raftcache is imported: ``import`` then fails as if they
were not installed), and its ``node serving`` log line names the front and loop it chose; a
PUT and a GET go through it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from raftcache.cli.supervisor import parent_death_hook
from tests.e2e.nodes import WAIT_S, node_env, wait_for
from tests.server.cluster import free_ports

pytestmark = pytest.mark.e2e

#: ``python -c`` launcher: block the imports, then run ``python -m raftcache`` with our argv.
BLOCKED = (
    "import runpy, sys; sys.modules['httptools'] = None; sys.modules['uvloop'] = None; "
    "runpy.run_module('raftcache', run_name='__main__', alter_sys=True)"
)
PLAIN = "import runpy; runpy.run_module('raftcache', run_name='__main__', alter_sys=True)"


def serving_line(log: Path, proc: subprocess.Popen[bytes]) -> dict[str, Any] | None:
    """The node's ``node serving`` JSON log record, once it has been written; fails if the
    node has exited."""
    assert proc.poll() is None, log.read_text()
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            record: dict[str, Any] = json.loads(line)
            if record.get("event") == "node serving":
                return record
    return None


async def _serves(proc: subprocess.Popen[bytes], log: Path, url: str) -> dict[str, Any]:
    """Wait for the ``node serving`` line, then PUT and GET a key; returns the line."""

    async def serving() -> dict[str, Any] | None:
        return serving_line(log, proc)

    record = await wait_for(serving, "the node serving")
    async with aiohttp.ClientSession() as http:
        # A single-node cluster elects itself; the PUT waits for that (forwarding waits).
        async with http.put(f"{url}/v1/keys/k", data=b"fallback") as put:
            assert put.status == 200, await put.text()
        async with http.get(f"{url}/v1/keys/k") as get:
            assert (get.status, await get.read()) == (200, b"fallback")
    return record


@pytest.mark.parametrize(
    ("launcher", "front", "loop"),
    [(PLAIN, "lean", "uvloop"), (BLOCKED, "aiohttp", "asyncio")],
    ids=["installed", "imports-blocked"],
)
def test_a_node_serves_on_the_path_its_imports_allow(
    tmp_path: Path, launcher: str, front: str, loop: str
) -> None:
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "n1.log"
    argv = [sys.executable, "-c", launcher, "serve", "--id", "n1"]
    argv += ["--listen", f"127.0.0.1:{port}", "--peers", f"n1={url}"]
    argv += ["--data-dir", str(tmp_path / "n1"), "--log-format", "json"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=node_env(),
            preexec_fn=parent_death_hook(),
        )
    try:
        record = asyncio.run(_serves(proc, log, url))
        assert (record["http_front"], record["loop"]) == (front, loop), record
    finally:
        proc.terminate()
        assert proc.wait(WAIT_S) == 0, log.read_text()
