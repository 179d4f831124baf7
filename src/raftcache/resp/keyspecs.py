"""Key specifications: where a command's keys are in its arguments, as Redis 7 declares them.

Rule: a command's key-specs (``Spec.key_specs``, declared once in the command table) are the
one statement of its key positions. COMMAND and COMMAND INFO report them, with the legacy
``first/last/step`` triple and the ``movablekeys`` flag derived from them as Redis derives
them (``legacy_range``); COMMAND GETKEYS and GETKEYSANDFLAGS find keys with them
(``find_keys``). Each spec is a ``begin_search`` (an argument ``Index``, or the argument after
a ``Keyword``) and a ``find_keys`` (a ``Range`` of keys from there, or a ``KeyNum``: a count
argument, then that many keys), with Redis's key flags (``RO``/``RW``/``OW``/``RM`` and
``access``/``update``/``insert``/``delete``). The parsers, which turn the same arguments into
a call's ``keys`` (what cluster redirects and CROSSSLOT check), must agree with them: a test
compares the two for random invocations of every command (tests/resp/test_command_keys.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from raftcache.cache.checks import parse_int64
from raftcache.resp.protocol import Simple

#: Redis's key flags, in the order Redis lists them.
FLAGS: Final = (
    "RO",
    "RW",
    "OW",
    "RM",
    "access",
    "update",
    "insert",
    "delete",
    "not_key",
    "incomplete",
    "variable_flags",
)


@dataclass(frozen=True, slots=True)
class Index:
    """Begin search at argument ``pos`` (the command name is argument 0)."""

    pos: int


@dataclass(frozen=True, slots=True)
class Keyword:
    """Begin search after ``keyword``, looked for from argument ``startfrom`` (negative: from
    the end, backwards)."""

    keyword: str
    startfrom: int


@dataclass(frozen=True, slots=True)
class Range:
    """Keys from the begin-search argument to ``lastkey`` past it (negative: counted from the
    last argument), every ``step``; ``limit`` (with ``lastkey`` -1) keeps 1/limit of the rest."""

    lastkey: int
    step: int = 1
    limit: int = 0


@dataclass(frozen=True, slots=True)
class KeyNum:
    """The argument ``keynumidx`` past the begin-search one counts the keys, which start
    ``firstkey`` past it, every ``step`` (EVAL's ``numkeys key ...``)."""

    keynumidx: int
    firstkey: int
    step: int = 1


KeyFlags = tuple[str, ...]
#: The flags of a ``variable_flags`` spec's keys in one invocation (SET: with GET or not).
VariableFlags = Callable[[Sequence[bytes]], KeyFlags]


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One key-spec: how to find some of a command's keys, and how the command uses them."""

    flags: KeyFlags
    begin: Index | Keyword
    find: Range | KeyNum
    notes: str = ""
    #: For a ``variable_flags`` spec: the flags its keys have in a given invocation.
    flags_of: VariableFlags | None = None

    def __post_init__(self) -> None:
        unknown = set(self.flags) - set(FLAGS)
        if unknown:
            raise ValueError(f"unknown key flags {sorted(unknown)}")


def one(pos: int, *flags: str) -> KeySpec:
    """The key at argument ``pos``."""
    return KeySpec(flags, Index(pos), Range(0))


def rest(pos: int, *flags: str, step: int = 1) -> KeySpec:
    """Keys from argument ``pos`` to the last, every ``step`` (MGET, DEL; MSET's step 2)."""
    return KeySpec(flags, Index(pos), Range(-1, step))


def counted(pos: int, *flags: str, notes: str = "") -> KeySpec:
    """A key count at argument ``pos``, then that many keys (EVAL, EVALSHA)."""
    return KeySpec(flags, Index(pos), KeyNum(0, 1), notes)


@dataclass(frozen=True, slots=True)
class Key:
    """A key found in an invocation: its argument position and its flags there."""

    pos: int
    flags: KeyFlags


def find_keys(specs: Sequence[KeySpec], argv: Sequence[bytes]) -> list[Key] | None:
    """The keys of ``argv`` (the command name first) in spec order, as Redis's
    ``getKeysUsingKeySpecs`` finds them; None when a spec does not fit the arguments (a key
    count that is not a non-negative integer, keys past the end: what the command itself
    would refuse). A ``Keyword`` spec whose keyword is absent finds nothing."""
    argc = len(argv)
    found: list[Key] = []
    for spec in specs:
        first = _begin(spec.begin, argv)
        if first is None:
            continue
        find = spec.find
        if isinstance(find, Range):
            step = find.step
            if find.lastkey >= 0:
                last = first + find.lastkey
            elif find.limit:
                last = first + (argc - first) // find.limit + find.lastkey
            else:
                last = argc + find.lastkey
        else:
            step = find.step
            if first + find.keynumidx >= argc:
                return None
            count = parse_int64(argv[first + find.keynumidx])
            if count is None or count < 0:
                return None
            first += find.firstkey
            last = first + count - 1
        if last >= argc or last < first or first >= argc:
            return None
        flags = spec.flags if spec.flags_of is None else spec.flags_of(argv)
        found += [Key(pos, flags) for pos in range(first, last + 1, step)]
    return found


def _begin(begin: Index | Keyword, argv: Sequence[bytes]) -> int | None:
    if isinstance(begin, Index):
        return begin.pos
    argc, word = len(argv), begin.keyword.upper()
    start = begin.startfrom if begin.startfrom > 0 else argc + begin.startfrom
    positions = range(start, argc) if begin.startfrom > 0 else range(start, 0, -1)
    for i in positions:
        if 1 <= i < argc and argv[i].decode("latin-1").upper() == word:
            return i + 1
    return None


def legacy_range(specs: Sequence[KeySpec]) -> tuple[int, int, int, bool]:
    """(first key, last key, step, movable keys): the pre-7 COMMAND triple Redis derives from
    the key-specs (``populateCommandLegacyRangeSpec``): one ``Index``+``Range`` spec is the
    triple itself; several plain (step 1) consecutive ones merge; a spec the triple cannot
    express (a keyword, a key count, a gap, a step) makes the command's keys movable — a
    cluster client must then ask COMMAND GETKEYS."""
    plain = [
        (spec.begin.pos, spec.find, spec.flags)
        for spec in specs
        if isinstance(spec.begin, Index) and isinstance(spec.find, Range)
    ]
    if not specs:
        return 0, 0, 0, False
    if len(specs) == 1 and plain:
        pos, find, flags = plain[0]
        last = find.lastkey + pos if find.lastkey >= 0 else find.lastkey
        return pos, last, find.step, "incomplete" in flags
    movable = len(plain) < len(specs)
    first, last, prev_last = 0, 0, 0
    for pos, find, flags in plain:
        if find.step != 1 or (prev_last and prev_last != pos - 1):
            movable = True
            continue
        movable = movable or "incomplete" in flags
        first = pos if not first else min(first, pos)
        end = find.lastkey + pos if find.lastkey >= 0 else find.lastkey
        # Redis compares as unsigned: a "to the end" (negative) last key wins over any index.
        last = end if last >= 0 and (end < 0 or end > last) else last
        prev_last = last
    if not first:
        return 0, 0, 0, True
    return first, last, 1, movable


def reply(spec: KeySpec) -> dict[str, Any]:
    """A key-spec as COMMAND INFO shows it (a map; RESP2 flattens it to an array)."""
    begin = spec.begin
    begin_reply = (
        {"type": "index", "spec": {"index": begin.pos}}
        if isinstance(begin, Index)
        else {"type": "keyword", "spec": {"keyword": begin.keyword, "startfrom": begin.startfrom}}
    )
    find = spec.find
    find_reply = (
        {
            "type": "range",
            "spec": {"lastkey": find.lastkey, "keystep": find.step, "limit": find.limit},
        }
        if isinstance(find, Range)
        else {
            "type": "keynum",
            "spec": {"keynumidx": find.keynumidx, "firstkey": find.firstkey, "keystep": find.step},
        }
    )
    notes = {"notes": spec.notes} if spec.notes else {}
    return {
        **notes,
        "flags": flag_set(spec.flags),
        "begin_search": begin_reply,
        "find_keys": find_reply,
    }


def flag_set(flags: KeyFlags) -> set[Simple]:
    """Key flags as Redis replies them: a set of status strings."""
    return {Simple(flag) for flag in FLAGS if flag in flags}


def set_flags(argv: Sequence[bytes]) -> KeyFlags:
    """SET's key: read and written with GET (``RW access update``), else overwritten."""
    with_get = any(arg.upper() == b"GET" for arg in argv[3:])
    return ("RW", "access", "update") if with_get else ("OW", "update")
