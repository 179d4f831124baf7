"""End to end: what a newcomer does after ``make run`` — the README's quick start, for real.

``make run`` is ``raftcache cluster --nodes 3`` (ports 8001-8003, data under ``./data``); here
the same command runs on free ports under a temporary directory. The README's curl commands are
replayed as curl sends them (``-d`` means ``Content-Type: application/x-www-form-urlencoded``, and
the server must not care), the installed ``raftcache`` console script sets and gets a key, and
Ctrl-C (SIGINT) stops every node cleanly (exit 0 each) and leaves no process behind.

``tests/cli/test_cli_e2e.py`` already covers the CLI commands in-process, ``python -m raftcache``,
and SIGINT after a node was killed; this adds the HTTP calls, the console script, and a clean
stop of a healthy cluster.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.cli.cluster_process import ClusterProcess, processes_mentioning
from tests.cli.test_cli_e2e import wait_until_gone

pytestmark = pytest.mark.e2e

#: What ``curl -d DATA`` sends along with the data.
CURL_FORM = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "*/*"}


async def _readme_curl_calls(n1: str, n2: str, n3: str) -> None:
    async with aiohttp.ClientSession() as http:
        # curl -X PUT localhost:8002/v1/keys/hello -d world  (a follower forwards it)
        async with http.put(f"{n2}/v1/keys/hello", data=b"world", headers=CURL_FORM) as resp:
            assert resp.status == 200, await resp.text()
            version = (await resp.json())["version"]
        # curl localhost:8003/v1/keys/hello
        async with http.get(f"{n3}/v1/keys/hello") as resp:
            assert (resp.status, await resp.read()) == (200, b"world")
            assert resp.headers["ETag"] == f'"{version}"'
        # curl -X PUT 'localhost:8001/v1/keys/session?ttl=30' -d tok
        async with http.put(f"{n1}/v1/keys/session?ttl=30", data=b"tok", headers=CURL_FORM) as r:
            assert r.status == 200, await r.text()
        # curl -X POST localhost:8001/v1/keys/visits/incr -d '{"by":5}'
        async with http.post(
            f"{n1}/v1/keys/visits/incr", data=b'{"by":5}', headers=CURL_FORM
        ) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["value"] == 5
        # curl -X PUT localhost:8001/v1/keys/hello -H 'If-Match: "<version>"' -d new
        cas = {**CURL_FORM, "If-Match": f'"{version}"'}
        async with http.put(f"{n1}/v1/keys/hello", data=b"new", headers=cas) as resp:
            assert resp.status == 200, await resp.text()
        async with http.put(f"{n1}/v1/keys/hello", data=b"newer", headers=cas) as resp:
            assert resp.status == 412  # the version moved on: compare-and-set refuses
            assert (await resp.json())["version"] > version
        # curl localhost:8001/v1/status, /v1/health, /metrics on every node
        leaders = set()
        for url in (n1, n2, n3):
            async with http.get(f"{url}/v1/status") as resp:
                status = await resp.json()
                assert sorted(status["members"]) == ["n1", "n2", "n3"]
                leaders.add(status["leader"])
            async with http.get(f"{url}/v1/health") as resp:
                assert resp.status == 200
            async with http.get(f"{url}/metrics") as resp:
                assert resp.status == 200
                assert "raftcache_" in await resp.text()
        assert len(leaders) == 1
        assert None not in leaders


def _console(args: list[str], endpoints: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run the installed ``raftcache`` console script, as the README does."""
    script = Path(sys.executable).parent / "raftcache"
    env = {**os.environ, "RAFTCACHE_ENDPOINTS": ",".join(endpoints)}
    return subprocess.run([str(script), *args], env=env, capture_output=True, timeout=60)


def test_make_run_cluster_answers_curl_and_cli_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ClusterProcess(data) as cluster:
        n1, n2, n3 = cluster.endpoints
        asyncio.run(_readme_curl_calls(n1, n2, n3))

        done = _console(["set", "greeting", "hi"], cluster.endpoints)
        assert done.returncode == 0, done.stderr
        done = _console(["get", "greeting"], cluster.endpoints)
        assert (done.returncode, done.stdout) == (0, b"hi"), done.stderr

        assert cluster.proc is not None
        cluster.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert cluster.proc.wait(60) == 0, cluster.output()
        assert wait_until_gone(list(cluster.pids.values())) == []
        assert processes_mentioning(str(data)) == []
        stopped = "\n".join(cluster.stderr)
        for node in ("n1", "n2", "n3"):
            assert f"{node} (exit 0)" in stopped, cluster.output()
        assert all((data / node).is_dir() for node in ("n1", "n2", "n3"))
