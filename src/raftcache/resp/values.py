"""How a key's value reaches the RESP commands: bytes for a string, ``HashValue`` for a hash.

Rule: the backends (this node's service, the leader over HTTP) hand every value to the commands
as ``bytes``, so that reads, read groups and transactions carry strings and hashes alike; a
hash's value is a ``HashValue`` — its fields as the cache encodes them
(``raftcache.cache.hashes``) — and its type is what tells a command it holds no string
(``WRONGTYPE``). Nothing else in this package decides what a value is.
"""

from __future__ import annotations

from raftcache.cache.entries import HASH, Item
from raftcache.cache.hashes import decode_fields


class HashValue(bytes):
    """The value of a key that holds a hash: its encoded fields (module docstring)."""

    __slots__ = ()

    def fields(self) -> dict[bytes, bytes]:
        """The hash's fields, in their order (a fresh dict)."""
        return decode_fields(self)


def as_value(item: Item) -> bytes:
    """An ``Item``'s value as the commands see it: a ``HashValue`` for a hash."""
    return HashValue(item.value) if item.kind == HASH else item.value
