"""The terms of the client API that the client, the server and the cache all speak.

Rule: this module imports nothing of raftcache (an import-linter contract keeps it so), so every
layer may import it — including ``raftcache.client``, which must not import the node's packages
and so cannot reach ``raftcache.protocol``. A bound or a name the client checks before sending
and the node checks on arrival is defined here once, so the two can never disagree.
"""

from __future__ import annotations

from typing import Final, Literal

#: The signed 64-bit range: counters, ``incr``/``decr`` amounts, versions, sequence numbers.
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

#: The longest client id (``X-Raftcache-Client-Id``, a ``Session``'s ``client_id``) a node
#: accepts, in characters (printable ASCII, so also bytes). The HTTP front refuses a longer
#: header with 400 and the cache refuses a longer session, so this is the end-to-end limit.
MAX_CLIENT_ID_CHARS: Final = 128

#: The longest node id, in characters. A node id is ASCII letters, digits, ``.``, ``_`` and ``-``:
#: ``NODE_ID_PATTERN`` matches exactly those of 1 to ``MAX_NODE_ID_CHARS`` characters. The admin
#: API, the ALARM command, ``raftcache recover`` and the OpenAPI document check this one rule.
MAX_NODE_ID_CHARS: Final = 128
#: A whole node id as a regular expression, the same text in Python and in a JSON schema.
NODE_ID_PATTERN: Final = f"[A-Za-z0-9_.-]{{1,{MAX_NODE_ID_CHARS}}}"

#: What a client's concurrent-write lanes append to its base id (``"<id>.<k>"``, see
#: ``raftcache.client.session``): room for ``.`` and seven digits.
CLIENT_LANE_SUFFIX_CHARS: Final = 8

#: The read consistency levels, strongest first; ``linearizable`` is the default.
Consistency = Literal["linearizable", "lease", "stale"]
CONSISTENCY_LEVELS: Final[tuple[Consistency, ...]] = ("linearizable", "lease", "stale")
DEFAULT_CONSISTENCY: Final[Consistency] = "linearizable"

#: On a forwarded ``GET /v1/keys/{key}``: the key's expiry, epoch seconds (``repr`` of the
#: float) or ``never`` — what a store's Redis front needs for TTL of a group it does not host.
EXPIRES_AT_HEADER: Final = "X-Raftcache-Expires-At"

#: On ``GET /v1/keys/{key}`` of a key that holds a hash (command version 5): ``hash``; the
#: body is then the hash's fields as a msgpack map (``MSGPACK_TYPE``).
VALUE_TYPE_HEADER: Final = "X-Raftcache-Type"
MSGPACK_TYPE: Final = "application/vnd.msgpack"

__all__ = [
    "CLIENT_LANE_SUFFIX_CHARS",
    "CONSISTENCY_LEVELS",
    "DEFAULT_CONSISTENCY",
    "EXPIRES_AT_HEADER",
    "INT64_MAX",
    "INT64_MIN",
    "MAX_CLIENT_ID_CHARS",
    "MAX_NODE_ID_CHARS",
    "MSGPACK_TYPE",
    "NODE_ID_PATTERN",
    "VALUE_TYPE_HEADER",
    "Consistency",
]
