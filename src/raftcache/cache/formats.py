"""Command versions: which commands a node can apply, and how a cluster moves to a newer set.

Rule: a command that a replica cannot apply must never reach its log — that replica would
either diverge (skip it while the others apply it) or stop. So every command type belongs to a
*command version* (``CommandVersion``), a small integer that grows when a release adds commands.
"Format" elsewhere means a file's encoding or the CLI's ``--format json``; only the names the
wire, the CLI and ``/v1/status`` already carry keep the word for this number
(``command_format``, ``--max-command-format``, the FORMAT command, ``command_format_needed``):


- format 1: SET, DELETE, INCR, BATCH of get/set/delete, EXPIRE (removal), TOUCH;
- format 2: the TTL-only change (``ttl``), FLUSH, the batch ops ``incr`` and ``ttl``, SET/batch
  set with ``keep_ttl``, the replicated restore (``restore.*``), and FORMAT itself;
- format 3: CHECK and ALARM, the divergence detection (``raftcache.cache.commands_v3``,
  docs/divergence.md);
- format 4: EVAL, SCRIPT LOAD and SCRIPT FLUSH, Lua scripts run inside the machine
  (``raftcache.cache.commands_v4``, ``raftcache.cache.scripting``, docs/resp.md).
- format 5: hashes — the batch op ``hash`` and hash entries in snapshots and backups
  (``raftcache.cache.hashes``);
- format 6: PUBLISH, pub/sub through the log (``raftcache.cache.commands_pubsub``).

A command of format F > 1 carries ``"f": F`` in its log entry. Three rules make this safe:

1. **A node knows its own ceiling** (``COMMAND_VERSION`` of its build, or lower when capped with
   ``--max-command-format``, which is how a test plays an older release). A node that meets an
   entry it cannot apply — ``f`` above its ceiling, an unknown op (of a batch too) — *fails stop*
   (``UnsupportedCommandVersionError``, the Raft driver's fail-stop path) instead of skipping it.
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
from typing import TypeAlias

from raftcache.cache.errors import CacheError

#: The version of the replicated command set: which commands a log entry may hold.
CommandVersion: TypeAlias = int

#: The oldest command version: what every release understands.
BASE_COMMAND_VERSION: CommandVersion = 1
#: The newest command version this build reads and writes.
COMMAND_VERSION: CommandVersion = 6


class UnsupportedCommandVersionError(Exception):
    """A committed entry this node cannot apply: the node must stop, never skip it.

    Not a ``CacheError``: nothing may turn it into a client error. It propagates out of
    ``apply_entry`` and the Raft driver fails stop with this message.
    """


class CommandVersionNotEnabledError(CacheError):
    """A command needs a command version that not every node of the cluster supports yet.

    Attributes:
        needed: the command version the command needs.
        cluster_command_version: the cluster's current command version (None: not known).
        nodes: the command versions the members reported (None: did not answer), when known.
    """

    def __init__(
        self,
        needed: CommandVersion,
        cluster_command_version: CommandVersion | None,
        nodes: Mapping[str, CommandVersion | None] | None = None,
        reason: str | None = None,
    ) -> None:
        self.needed = needed
        self.cluster_command_version = cluster_command_version
        self.nodes = dict(nodes or {})
        behind = sorted(n for n, f in self.nodes.items() if f is None or f < needed)
        if reason is None:
            reason = (
                f"nodes not supporting it: {', '.join(behind)}"
                if behind
                else "not every node supports it yet"
            )
        cluster = cluster_command_version
        runs = "an older format" if cluster is None else f"format {cluster}"
        super().__init__(
            f"this command needs command format {needed}, the cluster runs {runs} "
            f"({reason}); finish upgrading every node"
        )

    @property
    def cluster_format(self) -> CommandVersion | None:
        """``cluster_command_version`` under its earlier name."""
        return self.cluster_command_version


def check_max_command_version(max_command_version: object) -> CommandVersion:
    """Validate a node's ceiling (1..COMMAND_VERSION)."""
    ceiling = max_command_version
    if type(ceiling) is not int or not BASE_COMMAND_VERSION <= ceiling <= COMMAND_VERSION:
        raise ValueError(f"max command format must be an integer in 1..{COMMAND_VERSION}")
    return ceiling


# Earlier names, kept working (the same objects): from before "command version" had a name of its
# own, and from before the ``…Error`` convention (ruff's N818).
BASE_FORMAT = BASE_COMMAND_VERSION
COMMAND_FORMAT = COMMAND_VERSION
UnsupportedCommandFormatError = UnsupportedCommandVersionError
UnsupportedCommandFormat = UnsupportedCommandVersionError
FormatNotEnabledError = CommandVersionNotEnabledError
FormatNotEnabled = CommandVersionNotEnabledError
check_max_format = check_max_command_version
