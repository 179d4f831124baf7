"""Run ``python -m raftcache cluster`` as a real subprocess for end-to-end tests.

Rule: a test that starts a cluster stops it — ``ClusterProcess`` is a context manager whose exit
kills whatever is left (supervisor and children), so a failing test leaves no process behind.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

START_TIMEOUT_S = 60.0


def free_base_port(count: int) -> int:
    """A base port with ``count`` consecutive free loopback ports after it."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000)
        if all(_free(base + i) for i in range(count)):
            return base
    raise RuntimeError("no free port range found")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text`` (a /proc scan)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if text in cmdline and pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


class ClusterProcess:
    """``raftcache cluster`` in a subprocess, with its output collected line by line."""

    def __init__(
        self,
        data_dir: Path,
        nodes: int = 3,
        resp: bool = False,
        groups: int = 1,
        resp_cluster: bool = True,
        own_group: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.nodes = nodes
        #: ``--groups``: with more than one, the cluster prints a leader line per group.
        self.groups = groups
        self.group_leaders: dict[str, str] = {}
        #: Ask for Redis listeners (``--resp-base-port``, and ``--resp-cluster-base-port``
        #: unless ``resp_cluster`` is false).
        self.with_resp = resp
        self.with_resp_cluster = resp and resp_cluster
        #: Run it in a process group (a session) of its own, as a shell runs a foreground
        #: job: ``ctrl_c`` then signals that group, as a terminal does.
        self.own_group = own_group
        #: The command line run, and its base ports (None: not asked for).
        self.argv: list[str] = []
        self.base_port = 0
        self.resp_base_port: int | None = None
        self.resp_cluster_base_port: int | None = None
        #: The ``redis://`` URLs printed after each node's HTTP URL.
        self.resp: dict[str, list[str]] = {}
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.urls: dict[str, str] = {}
        self.pids: dict[str, int] = {}
        self.leader: str | None = None
        self.proc: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []

    @property
    def endpoints(self) -> list[str]:
        return list(self.urls.values())

    def __enter__(self) -> ClusterProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in processes_mentioning(str(self.data_dir)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for thread in self._readers:
            thread.join(10)
        if self.proc is not None:
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()

    def start(self) -> None:
        # With --groups and --resp-base-port alone the cluster-mode ports follow the plain
        # ones: keep their range free too.
        auto_cluster = self.with_resp and not self.with_resp_cluster and self.groups > 1
        ranges = 1 + self.with_resp + (self.with_resp_cluster or auto_cluster)
        base = self.base_port = free_base_port(ranges * self.nodes)
        # In the order of issue 14's example: cluster --nodes 3 --groups 4 --base-port 8001
        # --resp-base-port 7001 --data-dir ./data.
        argv = [sys.executable, "-m", "raftcache", "cluster", "--nodes", str(self.nodes)]
        if self.groups > 1:
            argv += ["--groups", str(self.groups)]
        argv += ["--base-port", str(base)]
        if self.with_resp:
            self.resp_base_port = base + self.nodes
            argv += ["--resp-base-port", str(self.resp_base_port)]
        if self.with_resp_cluster:
            self.resp_cluster_base_port = base + 2 * self.nodes
            argv += ["--resp-cluster-base-port", str(self.resp_cluster_base_port)]
        argv += ["--data-dir", str(self.data_dir)]
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=self.own_group,
        )
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        for stream, lines in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            reader = threading.Thread(target=_collect, args=(stream, lines), daemon=True)
            reader.start()
            self._readers.append(reader)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cluster did not start: {self.output()}")
            time.sleep(0.05)
        self._parse()

    def ctrl_c(self) -> None:
        """What Ctrl-C in a terminal does: SIGINT to the foreground process group (with
        ``own_group``; else to the ``raftcache cluster`` process alone)."""
        assert self.proc is not None
        if self.own_group:
            os.killpg(self.proc.pid, signal.SIGINT)
        else:
            self.proc.send_signal(signal.SIGINT)

    def _parse(self) -> None:
        for line in self.stdout:
            match = re.fullmatch(r"(n\d+) (http://\S+)((?: redis://\S+)*)", line)
            if match:
                self.urls[match.group(1)] = match.group(2)
                self.resp[match.group(1)] = match.group(3).split()
            elif line.startswith("leader "):
                self.leader = line.split()[1]
            elif line.startswith("group "):  # group g0 leader n2 http://...
                self.group_leaders[line.split()[1]] = line.split()[3]
        for line in self.stderr:
            match = re.search(r"started (n\d+) \(pid (\d+)\)", line)
            if match:
                self.pids[match.group(1)] = int(match.group(2))

    def _ready(self) -> bool:
        if self.groups > 1:
            return sum(line.startswith("group ") for line in self.stdout) >= self.groups
        return any(line.startswith("leader ") for line in self.stdout)

    def output(self) -> str:
        return "stdout:\n" + "\n".join(self.stdout) + "\nstderr:\n" + "\n".join(self.stderr)


def _collect(stream: object, lines: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.append(line.rstrip("\n"))
