"""The commands of command version 3 (``raftcache.cache.formats``): divergence detection.

Rule: as in ``commands``, a command carries everything its outcome depends on and validates
itself in ``__post_init__``; its log entry carries ``"f": 3``, so a node of an older release
fails stop rather than skip it — and the leader proposes neither command before the cluster's
format is 3 (the rolling-upgrade rule), so in practice an older node never meets one.

- ``CheckCommand`` (``o: check``): "record your digest here". Every replica, applying it,
  records (the entry's index, its state digest) in its ring; the leader then compares the
  replicas' digests at that one index (``raftcache.cache.divergence``). Changes no entry.
- ``AlarmCommand`` (``o: alarm``): raise (or, with ``clear``, lower) the divergence alarm of
  ``node_id``; ``node_id`` "*" with ``clear`` lowers every alarm. The alarm set is replicated
  state (as etcd stores its alarms through Raft), so every node reports the same alarms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from raftcache.cache.checks import check_now
from raftcache.cache.errors import InvalidCommandError
from raftcache.vocabulary import NODE_ID_PATTERN

#: The command version of these commands.
DIVERGENCE_VERSION = 3
#: ``AlarmCommand.node_id`` that, with ``clear``, lowers every alarm.
ALL_NODES = "*"
MAX_REASON_CHARS = 1024
_NODE_ID = re.compile(NODE_ID_PATTERN)


@dataclass(frozen=True, slots=True)
class CheckCommand:
    """Record the replica's digest at this entry's index; result the digest (an int)."""

    now: float

    def __post_init__(self) -> None:
        check_now(self.now)


@dataclass(frozen=True, slots=True)
class AlarmCommand:
    """Raise the divergence alarm of ``node_id`` (``reason``: why, for the operator), or
    lower it (``clear``); result the number of alarms raised afterwards."""

    now: float
    node_id: str
    reason: str = ""
    clear: bool = False

    def __post_init__(self) -> None:
        check_now(self.now)
        node_id = self.node_id
        if not isinstance(node_id, str) or not (
            _NODE_ID.fullmatch(node_id) or (node_id == ALL_NODES and self.clear is True)
        ):
            raise InvalidCommandError("alarm: node id must be a node id (or '*' to clear all)")
        if not isinstance(self.reason, str) or len(self.reason) > MAX_REASON_CHARS:
            raise InvalidCommandError(
                f"alarm: reason must be a string of <= {MAX_REASON_CHARS} chars"
            )
        if not isinstance(self.clear, bool):
            raise InvalidCommandError("alarm: clear must be a boolean")


def check_to_wire(cmd: CheckCommand) -> dict[str, Any]:
    return {"o": "check", "n": cmd.now}


def alarm_to_wire(cmd: AlarmCommand) -> dict[str, Any]:
    wire: dict[str, Any] = {"o": "alarm", "n": cmd.now, "id": cmd.node_id}
    if cmd.reason:
        wire["r"] = cmd.reason
    if cmd.clear:
        wire["x"] = True
    return wire


def alarm_from_wire(wire: dict[str, Any]) -> AlarmCommand:
    return AlarmCommand(wire["n"], wire["id"], wire.get("r", ""), wire.get("x", False))


#: The earlier name, kept working: the same number.
DIVERGENCE_FORMAT = DIVERGENCE_VERSION
