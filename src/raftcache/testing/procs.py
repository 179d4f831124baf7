"""One ``raftcache serve`` child process that a fault harness can kill, pause and restart.

Rule: the harness owns every process it spawns and can always take it down. Each node runs in
its own process group (a signal to the group also reaches any helper it started) and asks the
kernel for SIGKILL when the harness dies (``prctl(PR_SET_PDEATHSIG)``, Linux), so not even a
harness killed with SIGKILL leaves a node behind — SIGKILL because a node may be SIGSTOPped at
that moment, and a stopped process ignores everything else. A process is reaped as soon as it
is known to be dead, and a group is signalled only while its leader is unreaped, since a reaped
pid may belong to an unrelated process.

Like the rest of ``raftcache.testing``, this talks to the node only from outside: a command line,
signals, and the node's log file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raftcache.deathsig import death_signal_hook

__all__ = ["NodeProcess", "NodeSpec", "free_port", "log_tail"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS says is free now (another process may still take it before we bind)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """Where one node listens, keeps its data and writes its log.

    Attributes:
        node_id: The node's id (``--id``).
        host: The listen address (always loopback in the harness).
        port: The real listen port; peers reach it through their proxies.
        data_dir: The node's durable directory, kept across restarts.
        log_path: stdout and stderr of every incarnation, appended.
    """

    node_id: str
    host: str
    port: int
    data_dir: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


class NodeProcess:
    """A node that can be started, killed (-9 or TERM), paused, resumed and restarted.

    Args:
        spec: Where it listens and keeps its files.
        peers: ``--peers``: every member's id and the URL *this node* must use for it (its own
            proxies; its own real URL for itself).
        overrides: ``--peer-address-override``: routes that win over the addresses a
            membership change replicates (in the harness, the same proxies as ``peers``).
        extra_args: Appended to the ``serve`` command line.
        python: The interpreter (default: this one).
        env: The child's environment (default: this process's).
    """

    def __init__(
        self,
        spec: NodeSpec,
        peers: Mapping[str, str],
        *,
        extra_args: Sequence[str] = (),
        python: str = "",
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.peers = dict(peers)
        self.overrides = dict(overrides or {})
        self._extra = list(extra_args)
        self._python = python or sys.executable
        self._env = dict(os.environ if env is None else env)
        # Log lines must reach the file while the node runs, and a SIGKILL loses any buffer.
        self._env["PYTHONUNBUFFERED"] = "1"
        self._proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.starts = 0

    @property
    def node_id(self) -> str:
        return self.spec.node_id

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def command(self) -> list[str]:
        """The ``python -m raftcache serve ...`` command line."""
        peers = _pairs(self.peers)
        routes = _pairs(self.overrides)
        override = ["--peer-address-override", routes] if routes else []
        return [
            self._python,
            "-m",
            "raftcache",
            "serve",
            "--id",
            self.spec.node_id,
            "--listen",
            f"{self.spec.host}:{self.spec.port}",
            "--peers",
            peers,
            "--data-dir",
            str(self.spec.data_dir),
            *override,
            *self._extra,
        ]

    def alive(self) -> bool:
        """True while the process runs (a paused process is alive). Reaps a dead one."""
        return self._proc is not None and self._proc.poll() is None

    def exit_code(self) -> int | None:
        """The last incarnation's exit code (negative: killed by that signal), None if alive."""
        return None if self._proc is None else self._proc.poll()

    def start(self, *, stderr_path: Path | None = None) -> None:
        """Spawn a new incarnation; the previous one must be dead. With ``stderr_path`` its
        stderr goes to that file instead of the log (to read what a refusal says)."""
        if self.alive():
            raise RuntimeError(f"node {self.node_id} is already running")
        self.spec.data_dir.mkdir(parents=True, exist_ok=True)
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as files:
            log = files.enter_context(self.spec.log_path.open("ab"))
            log.write(f"--- harness: start #{self.starts + 1} of {self.node_id}\n".encode())
            log.flush()
            err: Any = subprocess.STDOUT
            if stderr_path is not None:
                err = files.enter_context(stderr_path.open("wb"))
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=err,
                env=self._env,
                process_group=0,
                preexec_fn=death_signal_hook(signal.SIGKILL),
            )
        self.paused = False
        self.starts += 1

    def wipe(self) -> None:
        """Delete the node's data directory (it must be dead): the next start is a brand-new
        member with the same id and address."""
        if self.alive():
            raise RuntimeError(f"node {self.node_id} is running: kill it before wiping its data")
        shutil.rmtree(self.spec.data_dir, ignore_errors=True)

    def signal(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to the node's process group; False when it is not running."""
        if not self.alive():
            return False
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)
        return True

    async def kill(self, timeout_s: float = 30.0) -> None:
        """``kill -9`` the node and reap it (no graceful anything: a crash)."""
        if self.signal(signal.SIGKILL):
            await self.wait_exit(timeout_s)
        self.paused = False

    async def wait_exit(self, timeout_s: float) -> bool:
        """Wait (without blocking the event loop: the proxies run on it) until the process
        exits; True if it did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.alive():
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def pause(self) -> bool:
        """SIGSTOP: the process freezes, sockets stay open (a GC pause, a VM stall)."""
        self.paused = self.signal(signal.SIGSTOP) or self.paused
        return self.paused

    def resume(self) -> None:
        """SIGCONT a paused node (harmless on a running one)."""
        self.signal(signal.SIGCONT)
        self.paused = False

    async def terminate(self, grace_s: float = 10.0) -> int | None:
        """Graceful stop: SIGCONT (a stopped process cannot act on SIGTERM), SIGTERM, then
        SIGKILL after ``grace_s``. Returns the exit code."""
        if self._proc is None:
            return None
        self.resume()
        if self.signal(signal.SIGTERM) and not await self.wait_exit(grace_s):
            await self.kill()
        return self._proc.poll()


def _pairs(urls: Mapping[str, str]) -> str:
    """``id=url,...`` as ``--peers`` and ``--peer-address-override`` take it (sorted by id)."""
    return ",".join(f"{node}={url}" for node, url in sorted(urls.items()))


def log_tail(path: Path, lines: int = 20, max_bytes: int = 16384) -> str:
    """The last ``lines`` lines of a node's log, for failure reports."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
