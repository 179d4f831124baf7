"""Every process the benchmark starts, and the guarantee that each one is stopped.

Rule: processes are only ever started through a ``ProcessGroup``; leaving its ``with`` block —
normally, on an exception, on Ctrl-C (KeyboardInterrupt) or on SIGTERM (turned into
``SystemExit`` by ``install_signal_handlers``) — sends SIGTERM to each child still alive, waits
a grace period, then SIGKILLs what is left. Children also get ``PR_SET_PDEATHSIG`` so that even
a SIGKILLed orchestrator leaves nothing behind (Linux). Children run in their own session so a
terminal's Ctrl-C reaches only the orchestrator, which then stops them in order.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to SIGKILL it if we die.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def install_signal_handlers() -> None:
    """Turn SIGTERM and SIGHUP into ``SystemExit`` and SIGINT into ``KeyboardInterrupt``, so
    ``finally`` blocks run and stop children."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)
    # A shell starts background jobs with SIGINT ignored, and Python keeps it so: restore it.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until 127.0.0.1:port accepts connections; raise if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class ProcessGroup:
    """Children started by the benchmark; stops all of them on exit from ``with``."""

    def __init__(self, grace_s: float = 10.0) -> None:
        self.grace_s = grace_s
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self,
        argv: Sequence[str],
        *,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        stdin_pipe: bool = False,
        stdout_pipe: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start one child; its stderr (and stdout unless piped) go to ``log_path``."""
        log = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout_pipe else log,
                stderr=log,
                env={**os.environ, **(env or {})},
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            if log_path is not None and not isinstance(log, int):
                log.close()  # the child holds its own descriptor
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace_s: float | None = None) -> int | None:
        """SIGTERM one child, wait for it (SIGKILL after the grace period); returns its code."""
        grace = self.grace_s if grace_s is None else grace_s
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        self._forget(proc)
        return proc.returncode

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL one child and reap it."""
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        self._forget(proc)

    def _forget(self, proc: subprocess.Popen[bytes]) -> None:
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        """SIGTERM every live child at once, then wait for each (SIGKILL after the grace)."""
        procs = list(self._procs)
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
            self._forget(proc)
