"""Three ``raftcache serve`` processes on three test hosts (network namespaces, see ``netns``).

What crosses a real network between hosts: elections, replication, a follower forwarding a write
to the leader on another host; then the leader's host is cut off. Asked from its own host straight
away, the cut-off node acknowledges no write and serves no linearizable read; the two others
elect a new leader and keep taking writes; once its cable is back the old leader follows the new
one and holds the write it missed, not its own unacknowledged one. Bounded (every wait has a
deadline; ~15 s in all) and cleaned up always.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from .netns import NetnsBed, NetnsClient, UnsupportedError, check_supported, client_in, sweep_stale

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

T = TypeVar("T")
NODES = ["n1", "n2", "n3"]
PORT = 8001
TOKEN = "multihost-cluster-token"


@dataclass
class Net:
    bed: NetnsBed
    client: NetnsClient  # on the switch: reaches every node that is not cut off
    procs: dict[str, subprocess.Popen[bytes]]

    def url(self, node_id: str) -> str:
        return f"http://{self.bed.address(node_id)}:{PORT}"

    def status(self, node_id: str, client: NetnsClient | None = None) -> dict[str, Any] | None:
        code, body = (client or self.client).request(
            "GET", self.url(node_id) + "/v1/status", timeout_s=2.0
        )
        return json.loads(body) if code == 200 else None


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = 15.0) -> T:
    """Poll ``probe`` until it returns something; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = probe()
        if found is not None:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    bed = NetnsBed(NODES)
    try:
        check_supported(bed.subnet)
        sweep_stale()
        bed.create()
    except UnsupportedError as exc:
        bed.destroy()
        pytest.skip(f"multi-host test not run: {exc}")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        peers = ",".join(f"{n}=http://{bed.address(n)}:{PORT}" for n in NODES)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTCACHE_")}
        env["RAFTCACHE_CLUSTER_TOKEN"] = TOKEN
        for node_id in NODES:
            argv = [
                *bed.exec_prefix(node_id),
                sys.executable,
                "-m",
                "raftcache",
                "serve",
                "--id",
                node_id,
                "--listen",
                f"{bed.address(node_id)}:{PORT}",
                "--peers",
                peers,
                "--data-dir",
                str(tmp_path / node_id),
                "--leader-wait",
                "1",
                "--network-timeout",
                "0.5",
                # The cut-off leader's write answers after this, not the default 10 s.
                "--propose-timeout",
                "3",
                "--log-level",
                "warning",
            ]
            with (tmp_path / f"{node_id}.log").open("wb") as log:
                # The child keeps its own copy of the descriptor; ours closes at once.
                procs[node_id] = subprocess.Popen(
                    argv, env=env, stdout=log, stderr=log, start_new_session=True
                )
        with client_in(bed.switch) as client:
            yield Net(bed, client, procs)
    finally:
        for proc in procs.values():
            _stop(proc)
        bed.destroy()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def agreed_leader(net: Net, nodes: list[str]) -> str | None:
    """The leader every node in ``nodes`` names, once that leader claims the role itself."""
    statuses = [net.status(n) for n in nodes]
    if any(s is None for s in statuses):
        return None
    leaders = {s["leader"] for s in statuses if s is not None}
    if len(leaders) != 1 or None in leaders:
        return None
    (leader,) = leaders
    claims = [s for s in statuses if s is not None and s["id"] == leader and s["role"] == "leader"]
    return leader if claims else None


def test_partitioned_leader_is_replaced_and_catches_up(net: Net) -> None:
    old = wait_for("a leader all three hosts agree on", lambda: agreed_leader(net, NODES), 20.0)
    old_term = (net.status(old) or {})["term"]
    follower = next(n for n in NODES if n != old)
    # A write sent to a follower on another host is forwarded to the leader across the network.
    code, body = net.client.request("PUT", net.url(follower) + "/v1/keys/k", b"before")
    assert code == 200, body

    net.bed.isolate(old)
    # Asked from its own host at once — while it may still believe it leads — the cut-off node
    # acknowledges no write and serves no read it cannot confirm with a quorum.
    with client_in(net.bed.namespace(old)) as local:
        code, body = local.request("PUT", net.url(old) + "/v1/keys/k", b"lost", timeout_s=15.0)
        assert code in (503, 504), (code, body)
        code, body = local.request("GET", net.url(old) + "/v1/keys/k", timeout_s=15.0)
        assert code != 200, body
        assert body != b"before"

    rest = [n for n in NODES if n != old]
    new = wait_for("a new leader among the connected hosts", lambda: agreed_leader(net, rest))
    assert new != old
    new_term = (net.status(new) or {})["term"]
    assert new_term > old_term
    code, body = net.client.request("PUT", net.url(new) + "/v1/keys/k", b"after")
    assert code == 200, body

    net.bed.heal(old)

    def caught_up() -> bool | None:
        status = net.status(old)
        if status is None or status["role"] != "follower" or status["term"] < new_term:
            return None
        code, body = net.client.request("GET", net.url(old) + "/v1/keys/k?consistency=stale")
        return True if (code, body) == (200, b"after") else None

    wait_for("the healed node to follow and hold the missed write", caught_up)
    assert agreed_leader(net, NODES) is not None
    code, body = net.client.request("GET", net.url(old) + "/v1/keys/k")  # linearizable, forwarded
    assert (code, body) == (200, b"after")


def test_refuses_a_subnet_the_machine_already_routes() -> None:
    """The guard that keeps the test network off any network this machine really has."""
    if os.geteuid() != 0:
        pytest.skip("multi-host test not run: network namespaces need root")
    with pytest.raises(UnsupportedError, match="in use on this machine"):
        check_supported("127.0.0")  # loopback is always in the local routing table
