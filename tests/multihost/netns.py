"""Test hosts made of Linux network namespaces: one namespace per node, all plugged into a bridge.

Rule: nothing of the test network exists outside the namespaces made here. Each veth pair is
created directly inside its two namespaces (never in the host's), the addresses come from a
private /24 that the host has no route to, and the test's own client joins the network from the
switch namespace (a thread that entered it with ``setns``) — so no packet of these tests can
leave the machine, and none reaches the host's interfaces. ``NetnsBed.destroy`` removes every
namespace it made (which removes their links); it runs whatever happened, and namespaces left
by a killed earlier run are swept on the next one.

Topology::

    ns <p>-n1 (eth0 10.x.y.1) ─┐
    ns <p>-n2 (eth0 10.x.y.2) ─┼─ ns <p>-sw: bridge br0 (10.x.y.254), the test's client
    ns <p>-n3 (eth0 10.x.y.3) ─┘

A partition takes a node's switch port down (``isolate``): that node then reaches nobody and
nobody reaches it, as when a host's cable is pulled; ``heal`` puts it back.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

PREFIX = "rcmh"
CLONE_NEWNET = 0x40000000
CMD_TIMEOUT_S = 10.0


class UnsupportedError(Exception):
    """This machine cannot make network namespaces here (the reason is the message)."""


def ip(*args: str) -> None:
    """Run ``ip ARGS``; a failure raises with iproute2's own message."""
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=CMD_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def check_supported(subnet: str) -> None:
    """Raise ``UnsupportedError`` unless we are root, have iproute2 and ``subnet`` is unused."""
    if shutil.which("ip") is None:
        raise UnsupportedError("iproute2 (the ip command) is not installed")
    if os.geteuid() != 0:
        raise UnsupportedError("network namespaces need root")
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"],
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT_S,
        check=False,
    ).stdout
    if subnet + "." in routes:
        raise UnsupportedError(f"{subnet}.0/24 is in use on this machine; the test needs it unused")


def sweep_stale() -> None:
    """Delete namespaces of earlier runs whose process is gone (a run killed mid-test)."""
    listing = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=CMD_TIMEOUT_S, check=False
    ).stdout
    for line in listing.splitlines():
        name = line.split()[0] if line.strip() else ""
        owner = name.removeprefix(PREFIX).split("-", 1)[0]
        if name.startswith(PREFIX) and owner.isdigit() and not _alive(int(owner)):
            with contextlib.suppress(RuntimeError):
                ip("netns", "del", name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class NetnsBed:
    """Namespaces ``<prefix>-sw`` and one per node id, wired as in the module docstring."""

    node_ids: list[str]
    subnet: str = "10.213.47"
    prefix: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}")
    made: list[str] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    def namespace(self, node_id: str) -> str:
        return f"{self.prefix}-{node_id}"

    def address(self, node_id: str) -> str:
        return f"{self.subnet}.{self.node_ids.index(node_id) + 1}"

    def port_name(self, node_id: str) -> str:
        return f"p{self.node_ids.index(node_id) + 1}"  # the node's port on the bridge

    def create(self) -> None:
        """Build the network; raises ``UnsupportedError`` when namespaces are not allowed here."""
        try:
            self._add_namespace(self.switch)
        except RuntimeError as exc:
            raise UnsupportedError(f"cannot create a network namespace: {exc}") from None
        ip("-n", self.switch, "link", "set", "lo", "up")
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "addr", "add", f"{self.subnet}.254/24", "dev", "br0")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for node_id in self.node_ids:
            ns, port = self.namespace(node_id), self.port_name(node_id)
            self._add_namespace(ns)
            ip("-n", ns, "link", "set", "lo", "up")
            # Both ends are born inside their namespaces: the host's namespace never sees them.
            ip(
                "-n",
                ns,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                self.switch,
            )
            ip("-n", ns, "addr", "add", f"{self.address(node_id)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", self.switch, "link", "set", port, "master", "br0")
            ip("-n", self.switch, "link", "set", port, "up")

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self.made.append(name)

    def isolate(self, node_id: str) -> None:
        """Pull the node's cable: its bridge port goes down."""
        ip("-n", self.switch, "link", "set", self.port_name(node_id), "down")

    def heal(self, node_id: str) -> None:
        ip("-n", self.switch, "link", "set", self.port_name(node_id), "up")

    def destroy(self) -> None:
        """Delete every namespace made (their veths go with them). Idempotent."""
        while self.made:
            name = self.made.pop()
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                ip("netns", "del", name)

    def exec_prefix(self, node_id: str) -> list[str]:
        """Command prefix that runs a program inside the node's namespace."""
        return ["ip", "netns", "exec", self.namespace(node_id)]


class NetnsClient:
    """Blocking HTTP from inside one namespace: a worker thread that ``setns``-ed into it.

    A network namespace is a per-thread attribute on Linux, and a socket stays in the namespace
    it was created in; so every request runs on this one thread.
    """

    def __init__(self, namespace: str) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=1, initializer=_enter_netns, initargs=(namespace,)
        )
        self.namespace = namespace
        # Fail now, not on the first request, when the thread could not enter it.
        self._executor.submit(lambda: None).result(timeout=CMD_TIMEOUT_S)

    def call(self, fn: Callable[[], T], timeout_s: float = 30.0) -> T:
        return self._executor.submit(fn).result(timeout=timeout_s)

    def request(
        self, method: str, url: str, body: bytes | None = None, timeout_s: float = 5.0
    ) -> tuple[int, bytes]:
        """(status, body) of one request; a connection failure is status 0."""

        def run() -> tuple[int, bytes]:
            req = urllib.request.Request(url, data=body, method=method)
            try:
                with urllib.request.urlopen(req, timeout=timeout_s) as answer:
                    return answer.status, answer.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()
            except (OSError, ValueError):
                return 0, b""

        return self.call(run, timeout_s + 5.0)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _enter_netns(namespace: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/run/netns/{namespace}", "rb") as handle:
        if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {namespace}: {os.strerror(errno)}")


@contextlib.contextmanager
def client_in(namespace: str) -> Iterator[NetnsClient]:
    client = NetnsClient(namespace)
    try:
        yield client
    finally:
        client.close()
