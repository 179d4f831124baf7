"""Child node processes for ``raftcache cluster``: spawn, watch, and stop them all.

Rule: no child outlives the supervisor. Each child runs in its own process group (so a terminal
Ctrl-C reaches only the supervisor, which then stops the nodes in order) and, on Linux, asks the
kernel for SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``), which covers a supervisor
killed with SIGKILL. ``stop`` sends SIGTERM to every group, waits out a grace period, then sends
SIGKILL to whatever is left and reaps it; signalling the whole group catches any helper
process a node started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from raftcache.deathsig import PR_SET_PDEATHSIG as PR_SET_PDEATHSIG
from raftcache.deathsig import death_signal_hook


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """Where one node listens and keeps its files."""

    node_id: str
    host: str
    port: int
    data_dir: Path
    log_path: Path
    resp_port: int | None = None
    resp_cluster_port: int | None = None
    #: ``--host-label`` of the node (None: the machine's name, ``serve``'s default).
    host_label: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def resp_flags(self) -> list[str]:
        """The ``serve`` flags of its Redis listeners."""
        flags = [] if self.resp_port is None else ["--resp-port", str(self.resp_port)]
        if self.resp_cluster_port is not None:
            flags += ["--resp-cluster-port", str(self.resp_cluster_port)]
        return flags


def plan_nodes(
    count: int,
    host: str,
    base_port: int,
    data_dir: Path,
    *,
    resp_base_port: int | None = None,
    resp_cluster_base_port: int | None = None,
    own_hosts: bool = False,
) -> list[NodeSpec]:
    """Nodes n1..nN on consecutive ports, each with ``DATA/nI`` and a log ``DATA/nI.log``;
    Redis listeners on consecutive ports from each base given; with ``own_hosts``, each node
    its own host label (its id), as if each ran on a machine of its own."""

    def nth(base: int | None, i: int) -> int | None:
        return None if base is None else base + i - 1

    return [
        NodeSpec(
            f"n{i}",
            host,
            base_port + i - 1,
            data_dir / f"n{i}",
            data_dir / f"n{i}.log",
            nth(resp_base_port, i),
            nth(resp_cluster_base_port, i),
            f"n{i}" if own_hosts else None,
        )
        for i in range(1, count + 1)
    ]


def serve_command(
    spec: NodeSpec, peers: Sequence[NodeSpec], extra: Sequence[str] = (), python: str = ""
) -> list[str]:
    """The ``python -m raftcache serve ...`` command line of one node."""
    peer_list = ",".join(f"{p.node_id}={p.url}" for p in peers)
    return [
        python or sys.executable,
        "-m",
        "raftcache",
        "serve",
        "--id",
        spec.node_id,
        "--listen",
        f"{spec.host}:{spec.port}",
        "--peers",
        peer_list,
        "--data-dir",
        str(spec.data_dir),
        *spec.resp_flags,
        *([] if spec.host_label is None else ["--host-label", spec.host_label]),
        *extra,
    ]


def parent_death_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child receive SIGTERM when this process dies (Linux only).

    SIGTERM, not SIGKILL: an orphaned node still runs its graceful shutdown (a leader hands
    over first), and the supervisor never SIGSTOPs a node, so the node is always able to act on it.
    """
    return death_signal_hook(signal.SIGTERM)


class Supervisor:
    """Starts one child per ``NodeSpec`` and guarantees they are all stopped by ``stop``."""

    def __init__(
        self,
        specs: Sequence[NodeSpec],
        *,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        command_for: Callable[[NodeSpec], list[str]] | None = None,
    ) -> None:
        """Plan the children (nothing is spawned before ``start``).

        Args:
            specs: The nodes.
            extra_args: Appended to every ``serve`` command line.
            env: The children's environment (default: this process's).
            command_for: Replaces ``serve_command`` (tests run stand-in children).
        """
        self.specs = list(specs)
        self._extra = list(extra_args)
        self._command_for = command_for
        self._env = dict(os.environ if env is None else env)
        # Node logs should be readable while the node runs, not when its buffer fills.
        self._env.setdefault("PYTHONUNBUFFERED", "1")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._reported: set[str] = set()

    def start(self) -> None:
        """Spawn every node (creating its data directory); on failure, stop those started."""
        hook = parent_death_hook()
        try:
            for spec in self.specs:
                spec.data_dir.mkdir(parents=True, exist_ok=True)
                with spec.log_path.open("ab") as log:
                    self.procs[spec.node_id] = subprocess.Popen(
                        self._command(spec),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=self._env,
                        process_group=0,
                        preexec_fn=hook,
                    )
        except BaseException:
            self.stop(grace_s=2.0)
            raise

    def _command(self, spec: NodeSpec) -> list[str]:
        if self._command_for is not None:
            return self._command_for(spec)
        return serve_command(spec, self.specs, self._extra)

    def newly_exited(self) -> list[tuple[str, int]]:
        """Children that exited since the last call, with their exit codes."""
        exited: list[tuple[str, int]] = []
        for node_id, proc in self.procs.items():
            code = proc.poll()
            if code is not None and node_id not in self._reported:
                self._reported.add(node_id)
                exited.append((node_id, code))
        return exited

    def stop(self, grace_s: float = 10.0) -> dict[str, int]:
        """SIGTERM every child, SIGKILL those still alive after ``grace_s``; reap all.

        Returns:
            Each node's exit code (negative: killed by that signal).
        """
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(p.poll() is None for p in self.procs.values()):
            time.sleep(0.05)
        self._signal_all(signal.SIGKILL)
        return {node_id: proc.wait() for node_id, proc in self.procs.items()}

    def _signal_all(self, sig: signal.Signals) -> None:
        for proc in self.procs.values():
            # Only while the leader is unreaped: afterwards its pid (= the group id) may be reused
            # by an unrelated process, which we must never signal.
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a node's log, for an error message."""
    try:
        data = path.read_bytes()[-8192:]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])
