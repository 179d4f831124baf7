"""End to end: what a newcomer does after ``make run`` — the README's quick start, for real.

``make run`` is ``raftcache cluster --nodes 3`` (ports 8001-8003, data under ``./data``); here
the same command runs on free ports under a temporary directory. The README's quick-start block
is run line by line, as written, by bash — real curl and jq, the installed ``raftcache`` console
script — with only the ports and the script's path substituted; every line must succeed (curl
fails on an HTTP error here, except on the lines whose comment says they answer 4xx) and print
what its comment says, in shape (versions are log indexes: they vary). ``monitor`` is left out
(a live view until Ctrl-C). Then Ctrl-C (SIGINT) stops every node cleanly (exit 0 each) and
leaves no process behind.

``tests/cli/test_cli_e2e.py`` already covers the CLI commands in-process, ``python -m raftcache``,
and SIGINT after a node was killed; this adds the HTTP calls, the console script, and a clean
stop of a healthy cluster.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.cli.cluster_process import ClusterProcess, processes_mentioning
from tests.cli.test_cli_e2e import wait_until_gone

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"

#: What each quick-start line prints (a regular expression searched in its output), by a piece
#: of the line: the README's comments, checked. Versions are matched as any number.
EXPECTED = {
    "keys/hello -d world": r'^\{"version":\d+\}$',
    "curl localhost:8003/v1/keys/hello": r"^world$",
    "session?ttl=30": r'^\{"version":\d+\}$',
    "session?tll=30": r"unknown query parameter 'tll'",
    "visits/incr": r'^\{"value":5,"version":\d+\}$',
    "-d hi | jq .version": r"^$",
    "-d new ": r'^\{"version":\d+\}$',
    "-d newer": r'^\{"error":"precondition failed","version":\d+\}$',
    "curl -i": r'(?s)ETag: "\d+".*\bnew$',
    "hello/ttl": r'^\{"changed":true,"version":\d+\}$',
    "prefix=session": r'^\{"deleted":1\}$',
    "v1/status": r'"role":"(leader|follower)","term":\d+,"leader":"n\d"',
    "get greeting": r"^\d+\nhi$",
    "raftcache status": r"leader",
    "snapshot save": r'"keys":\d+',
    "snapshot inspect": r'"verified":true',
    "snapshot restore": r"restored",
}
#: Lines whose comment says the answer is an HTTP error (curl exits 22 with --fail-with-body).
REFUSED = ("session?tll=30", "-d newer")


def readme_quick_start() -> list[str]:
    """The command lines of the README's quick-start block (the one after "another terminal")."""
    text = README.read_text(encoding="utf-8")
    block = text.split("In another terminal:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def run_quick_start(tmp_path: Path, endpoints: list[str]) -> list[tuple[str, int, str]]:
    """Run the block by bash, line by line in one shell: (line, exit status, output) each."""
    ports = [url.rpartition(":")[2] for url in endpoints]
    script = Path(sys.executable).parent / "raftcache"
    lines = [line for line in readme_quick_start() if "raftcache monitor" not in line]
    body = []
    for i, line in enumerate(lines):
        for n, port in enumerate(ports, start=1):
            line = line.replace(f"localhost:800{n}", f"127.0.0.1:{port}")
        line = line.replace(".venv/bin/raftcache", str(script))
        body += [f"echo '@@{i}'", line, 'rc=$?; echo; echo "@@rc $rc"']
    home = tmp_path / "home"
    home.mkdir()
    # curl reads ~/.curlrc: no progress meter, and an HTTP error is a failing command.
    (home / ".curlrc").write_text("silent\nshow-error\nfail-with-body\n")
    env = {**os.environ, "HOME": str(home), "RAFTCACHE_ENDPOINTS": ",".join(endpoints)}
    done = subprocess.run(
        ["bash", "-c", "\n".join(body)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    results = []
    parts = re.split(r"^@@", done.stdout, flags=re.M)[1:]
    for i, line in enumerate(lines):
        head, rest = parts[2 * i], parts[2 * i + 1]
        number, _, output = head.partition("\n")
        assert number == str(i), (head, done.stdout, done.stderr)
        results.append((line, int(rest.split()[1]), output.strip()))
    return results


def check_quick_start(results: list[tuple[str, int, str]]) -> None:
    seen = set()
    for line, status, output in results:
        refused = any(piece in line for piece in REFUSED)
        assert status == (22 if refused else 0), (line, status, output)
        for piece, pattern in EXPECTED.items():
            if piece in line:
                seen.add(piece)
                assert re.search(pattern, output, flags=re.M), (line, pattern, output)
    assert seen == set(EXPECTED), set(EXPECTED) - seen  # every expectation met a line


async def _every_node_answers(n1: str, n2: str, n3: str) -> None:
    async with aiohttp.ClientSession() as http:
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


def test_make_run_cluster_runs_the_readme_quick_start_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ClusterProcess(data) as cluster:
        n1, n2, n3 = cluster.endpoints
        check_quick_start(run_quick_start(tmp_path, cluster.endpoints))
        asyncio.run(_every_node_answers(n1, n2, n3))

        assert cluster.proc is not None
        cluster.proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert cluster.proc.wait(60) == 0, cluster.output()
        assert wait_until_gone(list(cluster.pids.values())) == []
        assert processes_mentioning(str(data)) == []
        stopped = "\n".join(cluster.stderr)
        for node in ("n1", "n2", "n3"):
            assert f"{node} (exit 0)" in stopped, cluster.output()
        assert all((data / node).is_dir() for node in ("n1", "n2", "n3"))
        # Every node stopped at once: the leader's hand-over, if it tried one, ended because
        # its target declined or went away, not by waiting out its bound (``TimeoutError()``).
        logs = "".join((data / f"{node}.log").read_text() for node in ("n1", "n2", "n3"))
        gave_up = [line for line in logs.splitlines() if "leadership transfer failed" in line]
        assert not [line for line in gave_up if "reason=TimeoutError()" in line], gave_up
