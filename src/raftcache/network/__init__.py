"""The transport layer between Raft nodes (docs/network.md).

Rule: everything here moves Raft messages (``raftcache.protocol.messages``) between nodes and
reports failures as ``NetworkError``s whose ``permanent`` flag says whether retrying can help;
nothing here interprets Raft. ``InMemoryNetwork`` (with ``InMemoryHub`` and ``ChaosSchedule``)
is the deterministic twin of ``HttpNetwork``; ``ReliableNetwork`` wraps either with timeouts and
retries, ``CircuitBreakerNetwork`` with a breaker per target, ``MeteredNetwork`` with metrics
(``NetworkMetrics``; ``HttpNetwork`` meters itself), and ``MultiPathNetwork`` spreads RPCs over
several transports. ``StreamNetwork`` is ``HttpNetwork`` sending through one multiplexed
WebSocket per peer instead of a POST per RPC (HTTP for peers without it). This package imports
the leaf ``raftcache.protocol`` only, never the Raft driver; the Prometheus export
(``raftcache.network.prometheus``) is imported only by whoever uses it.
"""

from __future__ import annotations

from raftcache.network.breaker import CircuitBreakerNetwork
from raftcache.network.chaos import ChaosSchedule
from raftcache.network.codec import CodecError
from raftcache.network.errors import (
    CircuitOpenError,
    NetworkError,
    NetworkRetryExhaustedError,
    NetworkTimeoutError,
)
from raftcache.network.http import HttpNetwork
from raftcache.network.hub import InMemoryHub
from raftcache.network.interface import NetworkInterface, RpcHandlers
from raftcache.network.memory import InMemoryNetwork
from raftcache.network.metered import MeteredNetwork
from raftcache.network.metrics import NetworkMetrics
from raftcache.network.multipath import MultiPathNetwork
from raftcache.network.reliable import ReliableNetwork
from raftcache.network.stream import StreamNetwork

__all__ = [
    "ChaosSchedule",
    "CircuitBreakerNetwork",
    "CircuitOpenError",
    "CodecError",
    "HttpNetwork",
    "InMemoryHub",
    "InMemoryNetwork",
    "MeteredNetwork",
    "MultiPathNetwork",
    "NetworkError",
    "NetworkInterface",
    "NetworkMetrics",
    "NetworkRetryExhaustedError",
    "NetworkTimeoutError",
    "ReliableNetwork",
    "RpcHandlers",
    "StreamNetwork",
]
