"""The transport layer between Raft nodes (SPEC §2).

Rule: everything here moves Raft messages (``raftcache.raft.messages``) between nodes and
reports failures as ``NetworkError``s whose ``permanent`` flag says whether retrying can help;
nothing here interprets Raft. ``InMemoryNetwork`` (with ``InMemoryHub`` and ``ChaosSchedule``)
is the deterministic twin of ``HttpNetwork``; ``ReliableNetwork`` wraps either with timeouts and
retries. This package imports ``raftcache.raft.messages`` only, never the Raft driver.
"""

from __future__ import annotations

from raftcache.network.chaos import ChaosSchedule
from raftcache.network.codec import CodecError
from raftcache.network.errors import (
    NetworkError,
    NetworkRetryExhaustedError,
    NetworkTimeoutError,
)
from raftcache.network.http import HttpNetwork
from raftcache.network.hub import InMemoryHub
from raftcache.network.interface import NetworkInterface, RpcHandlers
from raftcache.network.memory import InMemoryNetwork
from raftcache.network.reliable import ReliableNetwork

__all__ = [
    "ChaosSchedule",
    "CodecError",
    "HttpNetwork",
    "InMemoryHub",
    "InMemoryNetwork",
    "NetworkError",
    "NetworkInterface",
    "NetworkRetryExhaustedError",
    "NetworkTimeoutError",
    "ReliableNetwork",
    "RpcHandlers",
]
