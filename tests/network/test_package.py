"""The package surface (docs/network.md): exported, importable first in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest

import raftcache.network as network
from raftcache.network import (
    CodecError,
    NetworkError,
    NetworkRetryExhaustedError,
    NetworkTimeoutError,
)

SPEC_NAMES = {
    "NetworkInterface",
    "RpcHandlers",
    "InMemoryNetwork",
    "InMemoryHub",
    "ReliableNetwork",
    "HttpNetwork",
    "NetworkError",
    "NetworkTimeoutError",
    "NetworkRetryExhaustedError",
}


def test_exports() -> None:
    extras = {
        "ChaosSchedule",
        "CircuitBreakerNetwork",
        "CircuitOpenError",
        "CodecError",
        "MeteredNetwork",
        "MultiPathNetwork",
        "NetworkMetrics",
        "StreamNetwork",
    }
    assert set(network.__all__) == SPEC_NAMES | extras
    for name in network.__all__:
        assert getattr(network, name) is not None


def test_error_family() -> None:
    assert issubclass(NetworkTimeoutError, NetworkError)
    assert issubclass(NetworkRetryExhaustedError, NetworkError)
    assert issubclass(CodecError, ValueError)
    assert NetworkTimeoutError().permanent is False
    last = NetworkTimeoutError("late")
    exhausted = NetworkRetryExhaustedError("gave up", last_error=last)
    assert exhausted.last_error is last
    assert exhausted.permanent is False
    assert NetworkError("x").permanent is False
    # Every error has a kind for metrics; one built without it says which family it is in.
    assert (NetworkError("x").kind, NetworkError("x", permanent=True).kind) == (
        "transient",
        "permanent",
    )
    assert NetworkTimeoutError().kind == "timeout"
    assert exhausted.kind == "retry_exhausted"


def test_abstract_members_are_exactly_the_six_of_the_spec() -> None:
    assert network.NetworkInterface.__abstractmethods__ == {
        "send_request_vote",
        "send_append_entries",
        "send_install_snapshot",
        "register_handlers",
        "start",
        "stop",
    }


@pytest.mark.parametrize(
    "code",
    [
        "import raftcache.network; import raftcache.raft;"
        " from raftcache.network import HttpNetwork, InMemoryNetwork, ReliableNetwork",
        "import raftcache.raft; import raftcache.network;"
        " import raftcache.network.codec as c, raftcache.raft.messages as m;"
        " assert c.decode(m.LogEntry, c.encode(m.LogEntry(1, 1, b'x'))).command == b'x'",
    ],
)
def test_importable_first_in_a_fresh_interpreter(code: str) -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
