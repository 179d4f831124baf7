"""Command formats: which commands a node can apply, and how a cluster moves to a newer set.

Rule: a command that a replica cannot apply must never reach its log — that replica would
either diverge (skip it while the others apply it) or stop. So every command type belongs to a
*command format*, a small integer that grows when a release adds commands:

- format 1: SET, DELETE, INCR, BATCH of get/set/delete, EXPIRE (removal), TOUCH;
- format 2: the TTL-only change (``ttl``), FLUSH, the batch ops ``incr`` and ``ttl``, SET/batch
  set with ``keep_ttl``, the replicated restore (``restore.*``), and FORMAT itself;
- format 3: CHECK and ALARM, the divergence detection (``raftcache.cache.commands_v3``,
  docs/divergence.md).

A command of format F > 1 carries ``"f": F`` in its log entry. Three rules make this safe:

1. **A node knows its own ceiling** (``COMMAND_FORMAT`` of its build, or lower when capped with
   ``--max-command-format``, which is how a test plays an older release). A node that meets an
   entry it cannot apply — ``f`` above its ceiling, an unknown op — *fails stop*
   (``UnsupportedCommandFormatError``, the Raft driver's fail-stop path) instead of skipping it.
2. **The cluster's format is replicated state.** Starting at 1, it is raised by a FORMAT entry,
   which the leader proposes only after every voter and learner said it supports that format
   (``/v1/status`` → ``command_format``). The machine refuses (the same way on every replica)
   a command whose format is above the cluster's, so even a racing proposal cannot split
   replicas.
3. **The level only grows**, so once a node saw format F enabled, every later leader has too:
   there is no window where one leader proposes what another would refuse.

Snapshots carry the cluster's format in their counters (``command_format``, absent = 1): a node
restoring a snapshot above its ceiling fails stop too.
"""

from __future__ import annotations

from collections.abc import Mapping

from raftcache.cache.errors import CacheError

#: The oldest format: what every release understands.
BASE_FORMAT = 1
#: The newest format this build reads and writes.
COMMAND_FORMAT = 3


class UnsupportedCommandFormatError(Exception):
    """A committed entry this node cannot apply: the node must stop, never skip it.

    Not a ``CacheError``: nothing may turn it into a client error. It propagates out of
    ``apply_entry`` and the Raft driver fails stop with this message.
    """


class FormatNotEnabledError(CacheError):
    """A command needs a command format that not every node of the cluster supports yet.

    Attributes:
        needed: the format the command needs.
        cluster_format: the cluster's current format.
        nodes: the formats the members reported (None: did not answer), when known.
    """

    def __init__(
        self,
        needed: int,
        cluster_format: int | None,
        nodes: Mapping[str, int | None] | None = None,
        reason: str | None = None,
    ) -> None:
        self.needed = needed
        self.cluster_format = cluster_format
        self.nodes = dict(nodes or {})
        behind = sorted(n for n, f in self.nodes.items() if f is None or f < needed)
        if reason is None:
            reason = (
                f"nodes not supporting it: {', '.join(behind)}"
                if behind
                else "not every node supports it yet"
            )
        runs = "an older format" if cluster_format is None else f"format {cluster_format}"
        super().__init__(
            f"this command needs command format {needed}, the cluster runs {runs} "
            f"({reason}); finish upgrading every node"
        )


def check_max_format(max_format: object) -> int:
    """Validate a node's ceiling (1..COMMAND_FORMAT)."""
    if type(max_format) is not int or not BASE_FORMAT <= max_format <= COMMAND_FORMAT:
        raise ValueError(f"max command format must be an integer in 1..{COMMAND_FORMAT}")
    return max_format


# The names before the ``…Error`` convention (ruff's N818), kept working: the same classes.
UnsupportedCommandFormat = UnsupportedCommandFormatError
FormatNotEnabled = FormatNotEnabledError
