"""Argument parsing shared by the commands: keys, integers, options, and the parse limits.

Rule: parsing is strict and total, as Redis's is: a key is non-empty UTF-8 of at most
``MAX_KEY_BYTES`` (the cache's keys are strings, and the HTTP API's limit keeps keys forwardable
to the leader); an integer is what Redis's ``string2ll`` accepts (an optional ``-``, digits,
no leading zeros, no ``+``, within int64). Anything else raises the ``RespError`` Redis would
send.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from raftcache.cache.checks import parse_int64
from raftcache.resp.calls import Call
from raftcache.resp.errors import NOT_INTEGER
from raftcache.resp.keyspecs import KeySpec, legacy_range
from raftcache.resp.protocol import RespError

MAX_KEY_BYTES: Final = 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits applied while parsing.

    Attributes:
        max_value_bytes: largest value a write may store (as the HTTP API's default).
        max_keys_per_command: most keys one command (MGET, MSET, DEL, ...) may name.
    """

    max_value_bytes: int = 1024 * 1024
    max_keys_per_command: int = 10_000


Parser = Callable[[Sequence[bytes], Limits], Call]


@dataclass(frozen=True, slots=True)
class Spec:
    """A command of the table: its name, Redis's arity, flags and key-specs (for COMMAND and
    COMMAND GETKEYS), and its parser. Build it with ``Spec.of``, which derives the legacy key
    triple and ``movablekeys`` from the key-specs.

    Attributes:
        name: upper-case name.
        arity: Redis's convention: N means exactly N words (the name included), -N at least N.
        flags: Redis's command flags (``readonly``, ``write``, ``fast``...), for COMMAND.
        first_key: position of the first key argument (0: none), from ``key_specs``.
        last_key: position of the last key (-1: the last argument), from ``key_specs``.
        step: distance between keys, from ``key_specs``.
        group: Redis's command group (``string``, ``generic``, ``connection``, ``server``...).
        summary: one line, for COMMAND DOCS.
        parse: turns the arguments (the name excluded) into a ``Call``.
        key_specs: where its keys are (``raftcache.resp.keyspecs``); none for a keyless one.
    """

    name: str
    arity: int
    flags: tuple[str, ...]
    first_key: int
    last_key: int
    step: int
    group: str
    summary: str
    parse: Parser
    key_specs: tuple[KeySpec, ...] = ()

    @classmethod
    def of(
        cls,
        name: str,
        arity: int,
        flags: tuple[str, ...],
        key_specs: tuple[KeySpec, ...],
        group: str,
        summary: str,
        parse: Parser,
    ) -> Spec:
        """The spec of a table row, its key triple and ``movablekeys`` flag derived from its
        key-specs as Redis derives them (``keyspecs.legacy_range``)."""
        first, last, step, movable = legacy_range(key_specs)
        flags = (*flags, "movablekeys") if movable else flags
        return cls(name, arity, flags, first, last, step, group, summary, parse, key_specs)


def arity_ok(spec: Spec, words: int) -> bool:
    """Whether ``words`` (the name included) fits the spec's arity."""
    return words == spec.arity if spec.arity > 0 else words >= -spec.arity


def key(raw: bytes) -> str:
    """A key argument as the cache's string key."""
    if not raw or len(raw) > MAX_KEY_BYTES:
        raise RespError(f"ERR keys must be 1 to {MAX_KEY_BYTES} bytes long")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RespError("ERR keys must be valid UTF-8") from None


def keys(raws: Sequence[bytes], limits: Limits) -> tuple[str, ...]:
    """Several key arguments."""
    if len(raws) > limits.max_keys_per_command:
        raise RespError(f"ERR at most {limits.max_keys_per_command} keys per command")
    return tuple(key(raw) for raw in raws)


def value(raw: bytes, limits: Limits) -> bytes:
    """A value argument, checked against the size limit."""
    if len(raw) > limits.max_value_bytes:
        raise RespError(f"ERR value larger than {limits.max_value_bytes} bytes")
    return raw


def integer(raw: bytes, error: RespError = NOT_INTEGER) -> int:
    """An int64 argument, parsed as Redis's ``string2ll`` does."""
    number = parse_int64(raw)
    if number is None:
        raise error
    return number


def upper(raw: bytes) -> str:
    """An option or subcommand name, upper-cased (non-ASCII never matches an option)."""
    return raw.decode("latin-1").upper()


def text(raw: bytes) -> str:
    """A free-text argument (client name, pattern...) as a string, undecodable bytes kept as
    surrogates so that nothing a client sends is lost or raises."""
    return raw.decode("utf-8", errors="surrogateescape")
