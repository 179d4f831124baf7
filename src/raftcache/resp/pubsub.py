"""Pub/sub: PUBLISH through the Raft log, delivered by every node to its own subscribers.

Rule: a message is a log entry (PUBLISH, command version 6: ``raftcache.cache.commands_pubsub``)
that changes nothing; every replica, applying it, hands it to its RESP servers' hubs
(``raftcache.resp.subscriptions.PubSubHub``), which write it to the connections of this node
subscribed to the channel or to a matching pattern. So every node delivers the messages of a
channel in one order — the log's — whichever node they were published on, and nothing is
stored. Delivery never waits: a subscriber whose unsent output would pass 32 MiB (Redis's
``client-output-buffer-limit pubsub``) is disconnected, so a slow one costs memory up to that
bound and never time. While a connection runs a batch of its own commands, its messages wait
(bounded the same way) until the batch's replies are written: a SUBSCRIBE's confirmation comes
before the messages it subscribed to.

What a subscriber receives: the messages applied on its node whose entries were committed
after it subscribed (its node's commit index then: a node catching up does not replay older
ones). A node that restarts, or installs a snapshot in place of entries, misses the messages
of that gap; a PUBLISH whose answer was lost may or may not have been delivered, and a retry
may deliver it twice. PUBLISH answers the number of this node's connections subscribed to the
channel or to a matching pattern (Redis Cluster counts per node too).

On a sharded store every message goes through the first data group's log (one fixed group,
not the channel's slot: a channel is not a key, and PSUBSCRIBE must see every channel in one
order), so a store delivers only while it holds a replica of that group: SUBSCRIBE and
PSUBSCRIBE elsewhere answer an error naming the stores that do, and a store that stops holding
it disconnects its subscribers.

Commands: PUBLISH, SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE, PUBSUB CHANNELS | NUMSUB |
NUMPAT | HELP. A RESP2 connection with subscriptions accepts only (P)SUBSCRIBE,
(P)UNSUBSCRIBE, PING, QUIT and RESET, and PING answers ``[pong, message]`` there, as Redis does;
a RESP3 connection may run anything, its messages arriving as pushes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from raftcache.cache.commands_pubsub import MAX_CHANNEL_BYTES
from raftcache.resp import args
from raftcache.resp.args import Limits
from raftcache.resp.backend import Backend
from raftcache.resp.calls import Call, Mode, Reply
from raftcache.resp.errors import wrong_args
from raftcache.resp.protocol import Frames, Push, RespError
from raftcache.resp.state import ClientState
from raftcache.resp.subscriptions import PubSubHub, glob_bytes


def _count(client: ClientState) -> int:
    return len(client.channels) + len(client.patterns)


def _hub(ctx: ClientState) -> PubSubHub:
    hub = ctx.server.pubsub
    if hub is None:
        raise RespError("ERR pub/sub is not available on this server")
    return hub


class Subscribe(Call):
    """SUBSCRIBE / PSUBSCRIBE channel|pattern ...: one confirmation per name."""

    def __init__(self, names: Sequence[bytes], patterns: bool) -> None:
        self.names, self.patterns = names, patterns

    def run_server(self, ctx: ClientState) -> Reply:
        hub = _hub(ctx)
        if hub.unavailable is not None:
            return RespError(f"ERR {hub.unavailable}")
        kind = b"psubscribe" if self.patterns else b"subscribe"
        replies = []
        for name in self.names:
            if self.patterns:
                hub.psubscribe(ctx, name)
            else:
                hub.subscribe(ctx, name)
            replies.append(Push((kind, name, _count(ctx))))
        return Frames(replies)


class Unsubscribe(Call):
    """UNSUBSCRIBE / PUNSUBSCRIBE [channel|pattern ...]: none named means every one; with
    none subscribed, one confirmation with a nil name (as Redis)."""

    def __init__(self, names: Sequence[bytes], patterns: bool) -> None:
        self.names, self.patterns = names, patterns

    def run_server(self, ctx: ClientState) -> Reply:
        hub = _hub(ctx)
        kind = b"punsubscribe" if self.patterns else b"unsubscribe"
        held = ctx.patterns if self.patterns else ctx.channels
        names = list(self.names) or list(held)
        if not names:
            return Frames([Push((kind, None, _count(ctx)))])
        replies = []
        for name in names:
            if self.patterns:
                hub.punsubscribe(ctx, name)
            else:
                hub.unsubscribe(ctx, name)
            replies.append(Push((kind, name, _count(ctx))))
        return Frames(replies)


class Publish(Call):
    """PUBLISH channel message: one log entry; the count of this node's receivers. A write
    of its own (``Mode.WRITE``): a pipeline's PUBLISHes are proposed together, in order. The
    connection gives it the server's hub (``hub``) before it runs."""

    mode = Mode.WRITE
    writes = True

    def __init__(self, channel: bytes, message: bytes) -> None:
        self.channel, self.message = channel, message
        self.hub: PubSubHub | None = None

    async def run(self, backend: Backend) -> Reply:
        hub = self.hub
        if hub is None:
            raise RespError("ERR pub/sub is not available on this server")
        await backend.publish(self.channel, self.message)
        return hub.receivers(self.channel)


_PUBSUB_HELP: Final = (
    "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CHANNELS [<pattern>]",
    "    Return the currently active channels matching a <pattern> (default: '*').",
    "NUMPAT",
    "    Return number of subscriptions to patterns.",
    "NUMSUB [<channel> ...]",
    "    Return the number of subscribers for the specified channels, excluding",
    "    pattern subscriptions(default: no channels).",
    "HELP",
    "    Print this help.",
)


class PubSub(Call):
    """PUBSUB CHANNELS [pattern] | NUMSUB [channel ...] | NUMPAT | HELP: this node's
    subscriptions (as a Redis Cluster node reports its own)."""

    def __init__(self, sub: str, argv: Sequence[bytes]) -> None:
        self.sub, self.argv = sub, argv

    def run_server(self, ctx: ClientState) -> Reply:
        hub = _hub(ctx)
        sub, argv = self.sub, self.argv
        if sub == "CHANNELS":
            if len(argv) > 1:
                return wrong_args("pubsub|channels")
            regex = glob_bytes(argv[0]) if argv else None
            return [
                c for c in hub.channels if regex is None or regex.fullmatch(c.decode("latin-1"))
            ]
        if sub == "NUMSUB":
            out: list[Any] = []
            for channel in argv:
                out += [channel, len(hub.channels.get(channel, ()))]
            return out
        if sub == "NUMPAT":
            return wrong_args("pubsub|numpat") if argv else sum(map(len, hub.patterns.values()))
        if sub == "HELP":
            return [line.encode() for line in _PUBSUB_HELP]
        return RespError(f"ERR unknown subcommand '{sub}'. Try PUBSUB HELP.")


def parse_publish(argv: Sequence[bytes], limits: Limits) -> Call:
    if len(argv[1]) > limits.max_value_bytes:
        raise RespError(f"ERR message larger than {limits.max_value_bytes} bytes")
    if len(argv[0]) > MAX_CHANNEL_BYTES:
        raise RespError(f"ERR channel name longer than {MAX_CHANNEL_BYTES} bytes")
    return Publish(argv[0], argv[1])


def parse_subscribe(argv: Sequence[bytes], limits: Limits) -> Call:
    return Subscribe(argv, patterns=False)


def parse_psubscribe(argv: Sequence[bytes], limits: Limits) -> Call:
    return Subscribe(argv, patterns=True)


def parse_unsubscribe(argv: Sequence[bytes], limits: Limits) -> Call:
    return Unsubscribe(argv, patterns=False)


def parse_punsubscribe(argv: Sequence[bytes], limits: Limits) -> Call:
    return Unsubscribe(argv, patterns=True)


def parse_pubsub(argv: Sequence[bytes], limits: Limits) -> Call:
    return PubSub(args.upper(argv[0]), argv[1:])
