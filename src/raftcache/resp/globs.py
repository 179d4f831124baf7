"""Redis's glob patterns (KEYS, SCAN MATCH, CONFIG GET, PSUBSCRIBE, PUBSUB CHANNELS) as
regular expressions.

Rule: Redis's rules exactly — ``*``, ``?``, ``[a-z]`` (reversed ranges accepted), ``[^...]``,
``\\`` escapes, ``[]`` matching nothing, an unclosed class read as if closed; the literal
prefix before the first special character is returned too, so a listing can narrow to it. A
leaf of the package: it imports nothing of raftcache.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

_SPECIAL: Final = frozenset("*?[\\")


@lru_cache(maxsize=256)
def compile_glob(pattern: str) -> tuple[str, re.Pattern[str]]:
    """(literal prefix, regular expression) of a Redis glob pattern."""
    prefix_end = next((i for i, c in enumerate(pattern) if c in _SPECIAL), len(pattern))
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            i = _char_class(pattern, i, out)
        else:
            out.append(re.escape(c))
        i += 1
    return pattern[:prefix_end], re.compile("".join(out), re.DOTALL)


def _char_class(pattern: str, start: int, out: list[str]) -> int:
    """Translate ``[...]`` at ``start``; returns the index of its closing ``]``."""
    i, n = start + 1, len(pattern)
    negate = i < n and pattern[i] == "^"
    if negate:
        i += 1
    parts: list[str] = []
    while i < n and pattern[i] != "]":
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            i += 1
            parts.append(re.escape(pattern[i]))
        elif i + 2 < n and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            low, high = sorted((c, pattern[i + 2]))  # Redis accepts reversed ranges
            parts.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 2
        else:
            parts.append(re.escape(c))
        i += 1
    if not parts:
        out.append("[^\\s\\S]" if not negate else "[\\s\\S]")  # Redis: [] matches nothing
    else:
        out.append(("[^" if negate else "[") + "".join(parts) + "]")
    return i  # at the closing ']' (or the end: Redis treats an unclosed class the same way)
