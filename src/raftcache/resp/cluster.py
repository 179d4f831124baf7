"""CLUSTER: the Redis Cluster commands a store answers.

Rule: a key's slot is ``raftcache.slots.key_slot`` of its raw bytes — the same function the
stores route by and the Python clients compute — so ``CLUSTER KEYSLOT`` tells a client exactly
where a key lives. The topology subcommands (SLOTS, SHARDS, NODES, INFO) come with the sharded
store (docs/sharding.md, step 4); until then they are unknown subcommands, as Redis answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from raftcache.resp import args
from raftcache.resp.args import Limits
from raftcache.resp.calls import Call, Reply
from raftcache.resp.errors import wrong_args
from raftcache.resp.protocol import RespError
from raftcache.resp.state import ClientState
from raftcache.slots import key_slot

_HELP: Final = (
    "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "KEYSLOT <key>",
    "    Return the hash slot for <key>.",
    "HELP",
    "    Print this help.",
)


class Cluster(Call):
    """CLUSTER KEYSLOT key | HELP."""

    def __init__(self, sub: str, argv: Sequence[bytes]) -> None:
        self.sub, self.argv = sub, argv

    def run_server(self, ctx: ClientState) -> Reply:
        sub, argv = self.sub, self.argv
        if sub == "KEYSLOT":
            return key_slot(argv[0]) if len(argv) == 1 else wrong_args("cluster|keyslot")
        if sub == "HELP":
            return [line.encode() for line in _HELP] if not argv else wrong_args("cluster|help")
        return RespError(f"ERR unknown subcommand '{sub}'. Try CLUSTER HELP.")


def parse_cluster(argv: Sequence[bytes], limits: Limits) -> Call:
    return Cluster(args.upper(argv[0]), argv[1:])
