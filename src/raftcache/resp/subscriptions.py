"""The subscriptions of one RESP server's connections, and the delivery of applied PUBLISH
entries to them (the pub/sub rule: ``raftcache.resp.pubsub``).

Rule: ``deliver`` is called from inside the apply loop and never waits: a message is encoded
once per protocol version and handed to each subscriber's ``push`` (its connection's transport,
or its held output while it runs a batch); a subscriber whose unsent output would pass
``output_limit`` bytes (Redis's ``client-output-buffer-limit pubsub`` hard limit: 32 MiB) is
disconnected instead. A subscription receives the entries appended to this node's log after
it was made (the log's last index then, never less than the commit index: the RESP server's
``_commit_index``), so a node catching up never replays older messages to it — not even just after a
restart, when its commit index starts back at its snapshot's while its log on disk holds the
messages it had delivered before.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Final, Protocol, runtime_checkable

from raftcache.resp.globs import compile_glob
from raftcache.resp.protocol import Push, encode

log = logging.getLogger("raftcache.resp")

#: Unsent bytes after which a subscriber is disconnected (Redis's pubsub hard limit).
OUTPUT_LIMIT: Final = 32 * 1024 * 1024
#: Commands a RESP2 connection with subscriptions may run (Redis's list, SSUBSCRIBE aside).
SUBSCRIBED_COMMANDS: Final = frozenset(
    {"SUBSCRIBE", "PSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "PING", "QUIT", "RESET"}
)


class Subscriber(Protocol):
    """A connection as the hub sees it (``raftcache.resp.state.ClientState``)."""

    id: int
    addr: str
    proto: int
    #: Channel → the commit index when it was subscribed; pattern → the same.
    channels: dict[bytes, int]
    patterns: dict[bytes, int]

    def push(self, data: bytes) -> None: ...

    def pending_output(self) -> int: ...

    def close_connection(self) -> None: ...


def glob_bytes(pattern: bytes) -> re.Pattern[str]:
    """A Redis glob over bytes (each byte one latin-1 character)."""
    return compile_glob(pattern.decode("latin-1"))[1]


@runtime_checkable
class PublishSource(Protocol):
    """A state machine that reports applied PUBLISH entries (``CacheStateMachine``)."""

    def on_publish(self, listener: Callable[[int, bytes, bytes], None]) -> Callable[[], None]: ...


class PubSubHub:
    """The subscriptions of one RESP server's connections, fed by its machines' PUBLISH
    entries (module docstring).

    Args:
        commit_index: the commit index of the log messages come from, now (a subscription
            receives the entries after it).
        output_limit: unsent bytes after which a subscriber is disconnected.
    """

    def __init__(self, commit_index: Callable[[], int], output_limit: int = OUTPUT_LIMIT) -> None:
        self.commit_index = commit_index
        self.output_limit = output_limit
        self.channels: dict[bytes, set[Subscriber]] = {}
        self.patterns: dict[bytes, set[Subscriber]] = {}
        self._regex: dict[bytes, re.Pattern[str]] = {}
        self._sources: list[Callable[[], None]] = []
        #: Why this node cannot deliver right now (None: it can): a store without a voting
        #: replica of the pub/sub group.
        self.unavailable: str | None = None
        self.messages_total = 0
        self.disconnected_total = 0

    # --- sources ------------------------------------------------------------------------------

    def listen(self, machine: object) -> None:
        """Deliver the PUBLISH entries ``machine`` applies (replacing earlier sources)."""
        self.stop_listening()
        if isinstance(machine, PublishSource):
            self._sources.append(machine.on_publish(self.deliver))

    def stop_listening(self) -> None:
        for remove in self._sources:
            remove()
        self._sources.clear()

    # --- subscriptions ------------------------------------------------------------------------

    def subscribe(self, client: Subscriber, channel: bytes) -> None:
        if channel not in client.channels:
            client.channels[channel] = self.commit_index()
            self.channels.setdefault(channel, set()).add(client)

    def unsubscribe(self, client: Subscriber, channel: bytes) -> None:
        if client.channels.pop(channel, None) is not None:
            _discard(self.channels, channel, client)

    def psubscribe(self, client: Subscriber, pattern: bytes) -> None:
        if pattern not in client.patterns:
            client.patterns[pattern] = self.commit_index()
            if pattern not in self._regex:
                self._regex[pattern] = glob_bytes(pattern)
            self.patterns.setdefault(pattern, set()).add(client)

    def punsubscribe(self, client: Subscriber, pattern: bytes) -> None:
        if client.patterns.pop(pattern, None) is not None:
            _discard(self.patterns, pattern, client)
            if pattern not in self.patterns:
                self._regex.pop(pattern, None)

    def drop(self, client: Subscriber) -> None:
        """Forget every subscription of ``client`` (it disconnected, or RESET)."""
        for channel in list(client.channels):
            self.unsubscribe(client, channel)
        for pattern in list(client.patterns):
            self.punsubscribe(client, pattern)

    def disconnect_all(self, reason: str) -> None:
        """Close every subscribed connection (this node can no longer deliver)."""
        clients = {c for group in (*self.channels.values(), *self.patterns.values()) for c in group}
        for client in clients:
            log.info("closing a subscriber: %s", reason, extra={"client": client.id})
            client.close_connection()

    # --- delivery -----------------------------------------------------------------------------

    def receivers(self, channel: bytes) -> int:
        """This node's connections subscribed to ``channel`` or to a pattern matching it."""
        count = len(self.channels.get(channel, ()))
        if self.patterns:
            name = channel.decode("latin-1")
            for pattern, clients in self.patterns.items():
                if self._regex[pattern].fullmatch(name):
                    count += len(clients)
        return count

    def deliver(self, index: int, channel: bytes, message: bytes) -> None:
        """A PUBLISH applied at ``index``: write it to every subscriber that subscribed
        before it was committed. Never raises, never waits."""
        self.messages_total += 1
        subscribers = self.channels.get(channel)
        if subscribers:
            frames: dict[int, bytes] = {}
            for client in list(subscribers):
                if index > client.channels.get(channel, index):
                    data = frames.get(client.proto)
                    if data is None:
                        data = frames[client.proto] = encode(
                            Push((b"message", channel, message)), client.proto
                        )
                    self._send(client, data)
        if self.patterns:
            name = channel.decode("latin-1")
            for pattern, clients in list(self.patterns.items()):
                # (A subscriber dropped meanwhile may have taken a pattern with it.)
                regex = self._regex.get(pattern)
                if regex is None or not regex.fullmatch(name):
                    continue
                frames = {}
                for client in list(clients):
                    if index > client.patterns.get(pattern, index):
                        data = frames.get(client.proto)
                        if data is None:
                            data = frames[client.proto] = encode(
                                Push((b"pmessage", pattern, channel, message)), client.proto
                            )
                        self._send(client, data)

    def _send(self, client: Subscriber, data: bytes) -> None:
        if client.pending_output() + len(data) > self.output_limit:
            self.disconnected_total += 1
            log.warning(
                "closing a subscriber over the pub/sub output limit (%d bytes unsent)",
                client.pending_output(),
                extra={"client": client.id, "addr": client.addr},
            )
            self.drop(client)
            client.close_connection()
            return
        client.push(data)


def _discard(table: dict[bytes, set[Subscriber]], name: bytes, client: Subscriber) -> None:
    clients = table.get(name)
    if clients is not None:
        clients.discard(client)
        if not clients:
            del table[name]
