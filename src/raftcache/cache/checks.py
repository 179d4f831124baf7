"""Argument checks shared by the cache commands (``commands``, ``commands_v2``).

Rule: each check accepts exactly the values a command may carry and raises ``InvalidCommandError``
otherwise, so encoders refuse bad arguments before proposing and ``decode`` refuses malformed
entries. A ``bool`` is never accepted where a number is meant (it is an ``int`` subclass).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from raftcache.cache.errors import InvalidCommandError
from raftcache.vocabulary import INT64_MAX, INT64_MIN


def parse_int64(raw: bytes) -> int | None:
    """An int64 as Redis's ``string2ll`` reads it (optional ``-``, digits, no leading zero, no
    ``+``), or None: the RESP port's integer arguments and the script commands' share it."""
    if not 0 < len(raw) <= 20:
        return None
    digits = raw[1:] if raw[:1] == b"-" else raw
    if not digits.isdigit() or (digits[:1] == b"0" and (len(digits) > 1 or raw[:1] == b"-")):
        return None
    number = int(raw)
    return number if INT64_MIN <= number <= INT64_MAX else None


def check_key(key: object, what: str = "key") -> None:
    if not isinstance(key, str) or not key:
        raise InvalidCommandError(f"{what} must be a non-empty string")


def check_int(x: object, what: str, low: int, high: int) -> None:
    # bool is an int subclass: True must not pass for a version or a delta.
    if type(x) is not int or not low <= x <= high:
        raise InvalidCommandError(f"{what} must be an integer in [{low}, {high}]")


def check_now(now: object) -> None:
    if not isinstance(now, int | float) or isinstance(now, bool) or not math.isfinite(now):
        raise InvalidCommandError("now must be a finite number")


def check_ttl(ttl: object) -> None:
    if ttl is None:
        return
    if not isinstance(ttl, int | float) or isinstance(ttl, bool):
        raise InvalidCommandError("ttl must be a number of seconds")
    if not (math.isfinite(ttl) and ttl > 0):
        raise InvalidCommandError("ttl must be a finite number of seconds > 0")


def check_condition(if_version: object, if_absent: object) -> None:
    if if_version is not None:
        check_int(if_version, "if_version", 0, INT64_MAX)
    if not isinstance(if_absent, bool):
        raise InvalidCommandError("if_absent must be a bool")


def check_write(
    key: object, value: object, ttl: object, if_version: object, if_absent: object
) -> None:
    check_key(key)
    if not isinstance(value, bytes):
        raise InvalidCommandError("value must be bytes")
    check_ttl(ttl)
    check_condition(if_version, if_absent)


#: The longest session client id a replica *applies*. Larger than the id a node accepts from a
#: client (``raftcache.vocabulary.MAX_CLIENT_ID_CHARS``, refused at the edge), and it must not
#: shrink: it decides, on every replica, whether an entry already in the log applies or is an
#: error, so replicas of two releases that disagreed on it would diverge. Changing it needs a
#: new command version.
APPLIED_CLIENT_ID_CHARS = 256


@dataclass(frozen=True, slots=True)
class Session:
    """A client session: writes with the same ``client_id`` and ``seq`` apply at most once.

    A client uses a fresh ``client_id`` per process and increasing ``seq`` values, with at most
    ``session_window`` writes outstanding (see ``raftcache.cache.sessions``).
    """

    client_id: str
    seq: int

    def __post_init__(self) -> None:
        if not isinstance(self.client_id, str) or not self.client_id:
            raise InvalidCommandError("client_id must be a non-empty string")
        if len(self.client_id) > APPLIED_CLIENT_ID_CHARS:
            raise InvalidCommandError(f"client_id longer than {APPLIED_CLIENT_ID_CHARS} characters")
        check_int(self.seq, "seq", 0, INT64_MAX)
