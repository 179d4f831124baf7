"""The command of command version 6 (``raftcache.cache.formats``): PUBLISH, pub/sub through the log.

Rule: a message goes through the Raft log so that every replica meets it at the same place in
one order: ``PublishCommand`` (``o: pub``, ``ch`` the channel, ``m`` the message, both bytes)
changes nothing in the cache and is not stored — applying it hands (index, channel, message) to
the machine's publish listeners (``CacheStateMachine.on_publish``: the Redis front delivers it
to this node's subscribers), then returns the entry's index. Its log entry carries ``"f": 6``,
so a node of an older release fails stop rather than skip it, and the leader proposes none
before the cluster's format is 6 (the rolling-upgrade rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from raftcache.cache.checks import check_now
from raftcache.cache.errors import InvalidCommandError

#: The command version of PUBLISH. Other releases may number theirs differently; the lead
#: renumbers at merge (``raftcache.cache.formats``).
PUBSUB_VERSION: Final = 6
#: The longest channel name a PUBLISH carries (Redis has no limit; a name is not a payload).
MAX_CHANNEL_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class PublishCommand:
    """Deliver ``message`` on ``channel`` to every replica's subscribers; result the index."""

    now: float
    channel: bytes
    message: bytes

    def __post_init__(self) -> None:
        check_now(self.now)
        channel = self.channel
        if not isinstance(channel, bytes) or len(channel) > MAX_CHANNEL_BYTES:
            raise InvalidCommandError(f"publish: channel must be at most {MAX_CHANNEL_BYTES} bytes")
        if not isinstance(self.message, bytes):
            raise InvalidCommandError("publish: message must be bytes")


def publish_to_wire(cmd: PublishCommand) -> dict[str, Any]:
    return {"o": "pub", "n": cmd.now, "ch": cmd.channel, "m": cmd.message}


def publish_from_wire(wire: dict[str, Any]) -> PublishCommand:
    return PublishCommand(wire["n"], wire["ch"], wire["m"])
