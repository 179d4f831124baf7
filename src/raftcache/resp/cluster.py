"""CLUSTER and the Redis Cluster redirects: what a cluster-aware client needs to route keys.

Rule: a key's slot is ``raftcache.slots.key_slot`` of its raw bytes — the same function the
stores route by and the Python clients compute — so ``CLUSTER KEYSLOT`` tells a client exactly
where a key lives. The topology (``raftcache.resp.topology``) says who serves each slot: in a
cluster of one Raft group, every slot is served by the group's leader. ``CLUSTER SLOTS``,
``SHARDS`` and ``NODES`` advertise each voter's cluster-mode RESP port (its plain port when it
has none); on a cluster-mode port (``--resp-cluster-port``) a keyed command this node must not
run is answered as Redis Cluster answers it (``redirect``): ``CROSSSLOT`` when its keys span
slots, ``MOVED <slot> <leader>`` on a follower, except reads on a ``READONLY`` connection,
which the follower serves itself at the ``stale`` level, as READONLY means on the plain port.
When no leader is known, or the leader's address is not (not heard from yet, or down), the
answer is ``CLUSTERDOWN``, as Redis Cluster answers while a failover runs: cluster clients then
refresh their slots from another node, whereas ``TRYAGAIN`` (what forwarding would answer)
makes redis-py retry the same node without refreshing — stranded there for as long as it stays
cut off. A client that wants a cut-off node to keep serving uses the plain port, which
forwards. Slots never move between groups, so ``ASK`` is never sent (docs/sharding.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from raftcache.resp import args
from raftcache.resp.args import Limits
from raftcache.resp.calls import Call, Reply
from raftcache.resp.errors import wrong_args
from raftcache.resp.protocol import RespError, Verbatim
from raftcache.resp.state import ClientState
from raftcache.resp.topology import Topology, cluster_node_id, split_address
from raftcache.slots import SLOTS, key_slot

CROSSSLOT: Final = RespError("CROSSSLOT Keys in request don't hash to the same slot")
CLUSTERDOWN: Final = RespError("CLUSTERDOWN The cluster is down")
DISABLED: Final = RespError("ERR This instance has cluster support disabled")
_LAST_SLOT: Final = SLOTS - 1

_HELP: Final = (
    "CLUSTER <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "INFO",
    "    Return information about the cluster.",
    "KEYSLOT <key>",
    "    Return the hash slot for <key>.",
    "MYID",
    "    Return the node id.",
    "NODES",
    "    Return cluster configuration seen by node. Output format:",
    "    <id> <ip:port@bus-port> <flags> <master> <pings> <pongs> <epoch> <link> <slot> ...",
    "SHARDS",
    "    Return information about slot range mappings and the nodes they belong to.",
    "SLOTS",
    "    Return information about slots range mappings. Each range is made of:",
    "    start, end, master and replicas IP addresses, ports and ids",
    "HELP",
    "    Print this help.",
)


def redirect(client: ClientState, call: Call) -> RespError | None:
    """On a cluster-mode port: the error that answers ``call`` instead of running it here,
    or None to run it (see the module docstring)."""
    server = client.server
    topology: Topology | None = server.topology
    if not server.cluster_mode or topology is None or not call.keys:
        return None
    slot = _one_slot(call.keys)
    if slot is None:
        return CROSSSLOT
    leader = topology.leader()
    if leader == topology.node.node_id:
        return None
    if not call.writes and client.consistency == "stale":
        return None  # READONLY: this replica answers reads, leader or not
    address = None if leader is None else topology.address_of(leader)
    if address is None:
        return CLUSTERDOWN
    return RespError(f"MOVED {slot} {address}")


def joins_slot(queued: Sequence[Call], call: Call) -> bool:
    """Whether ``call``'s keys hash to the slot of the transaction ``queued`` so far — whose
    keys share one already, each call having been checked as it was queued, so one key of
    theirs stands for all (no rehashing of the whole queue per command)."""
    first = next((c.keys[0] for c in queued if c.keys), None)
    keys = list(call.keys) if first is None else [first, *call.keys]
    return not keys or _one_slot(keys) is not None


def _one_slot(keys: Sequence[str]) -> int | None:
    first = key_slot(keys[0])
    return first if all(key_slot(k) == first for k in keys[1:]) else None


class Cluster(Call):
    """CLUSTER KEYSLOT key | SLOTS | SHARDS | NODES | INFO | MYID | HELP."""

    def __init__(self, sub: str, argv: Sequence[bytes]) -> None:
        self.sub, self.argv = sub, argv

    def run_server(self, ctx: ClientState) -> Reply:
        sub, argv = self.sub, self.argv
        if sub == "KEYSLOT":
            return key_slot(argv[0]) if len(argv) == 1 else wrong_args("cluster|keyslot")
        if sub == "HELP":
            return [line.encode() for line in _HELP] if not argv else wrong_args("cluster|help")
        if sub not in _VIEWS:
            return RespError(f"ERR unknown subcommand '{sub}'. Try CLUSTER HELP.")
        if argv:
            return wrong_args(f"cluster|{sub.lower()}")
        topology: Topology | None = ctx.server.topology
        if topology is None:
            return DISABLED
        return _VIEWS[sub](_View(topology))


class _View:
    """The voters as a cluster client sees them: the leader is the one master, a voter that
    stopped answering polls is down (left out of SLOTS and SHARDS, ``fail`` in NODES)."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.me = topology.node.node_id
        self.leader = topology.leader()
        self.term = topology.node.current_term
        self.members: list[tuple[str, str, int, bool]] = []  # id, host, port, down
        for member in topology.members():
            advertised = topology.advertised(member)
            if advertised is None or not advertised.best:
                continue
            try:
                host, port = split_address(advertised.best)
            except ValueError:  # this node's own, misconfigured: advertise nothing for it
                continue
            self.members.append((member, host, port, topology.is_down(member)))

    @property
    def master(self) -> tuple[str, str, int, bool] | None:
        """The leader, when it is known and not down."""
        return next((m for m in self.members if m[0] == self.leader and not m[3]), None)

    @property
    def replicas(self) -> list[tuple[str, str, int, bool]]:
        return [m for m in self.members if m[0] != self.leader and not m[3]]


def _slots(view: _View) -> Reply:
    master = view.master
    if master is None:
        return []  # no leader reachable: no slot is served right now
    entry: list[Any] = [0, _LAST_SLOT]
    for member, host, port, _ in [master, *view.replicas]:
        entry.append([host.encode(), port, cluster_node_id(member).encode()])
    return [entry]


def _shards(view: _View) -> Reply:
    nodes = []
    for member, host, port, down in view.members:
        if down:
            continue
        nodes.append(
            {
                "id": cluster_node_id(member),
                "port": port,
                "ip": host,
                "endpoint": host,
                "role": "master" if member == view.leader else "replica",
                "replication-offset": view.topology.node.last_applied if member == view.me else 0,
                "health": "online",
            }
        )
    slots = [0, _LAST_SLOT] if view.master is not None else []
    return [{"slots": slots, "nodes": nodes}]


def _nodes(view: _View) -> Reply:
    leader = next((m for m in view.members if m[0] == view.leader), None)
    master_id = cluster_node_id(leader[0]) if leader is not None else "-"
    lines = []
    for member, host, port, down in view.members:
        leads = member == view.leader
        flags = ("myself," if member == view.me else "") + ("master" if leads else "slave")
        flags += ",fail" if down else ""
        line = (
            f"{cluster_node_id(member)} {host}:{port}@{port + 10000} {flags} "
            f"{'-' if leads else master_id} 0 0 {view.term} "
            f"{'disconnected' if down else 'connected'}"
        )
        lines.append(line + (f" 0-{_LAST_SLOT}" if leads else ""))
    return Verbatim("".join(line + "\n" for line in lines))


def _info(view: _View) -> Reply:
    ok = view.master is not None
    fields = {
        "cluster_state": "ok" if ok else "fail",
        "cluster_slots_assigned": SLOTS if ok else 0,
        "cluster_slots_ok": SLOTS if ok else 0,
        "cluster_slots_pfail": 0,
        "cluster_slots_fail": 0,
        "cluster_known_nodes": len(view.topology.members()),
        "cluster_size": 1 if ok else 0,
        "cluster_current_epoch": view.term,
        "cluster_my_epoch": view.term,
    }
    return Verbatim("".join(f"{k}:{v}\r\n" for k, v in fields.items()))


def _myid(view: _View) -> Reply:
    return cluster_node_id(view.me).encode()


_VIEWS: Final = {
    "SLOTS": _slots,
    "SHARDS": _shards,
    "NODES": _nodes,
    "INFO": _info,
    "MYID": _myid,
}


def parse_cluster(argv: Sequence[bytes], limits: Limits) -> Call:
    return Cluster(args.upper(argv[0]), argv[1:])
