"""CLUSTER and the Redis Cluster redirects: what a cluster-aware client needs to route keys.

Rule: a key's slot is ``raftcache.slots.key_slot`` of its raw bytes — the same function the
stores route by and the Python clients compute — so ``CLUSTER KEYSLOT`` tells a client exactly
where a key lives. The topology (``raftcache.resp.topology``) says who serves each slot: in a
cluster of one Raft group, every slot is served by the group's leader. ``CLUSTER SLOTS``,
``SHARDS`` and ``NODES`` advertise each voter's cluster-mode RESP port (its plain port when it
has none) — they, and ``INFO``, first wait (bounded) for a poll while the topology has a member
it has never heard from (``Topology.settle``), so that a client given one node learns them
all; on a cluster-mode port (``--resp-cluster-port``) a keyed command this node must not
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

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from raftcache.resp import args
from raftcache.resp.args import Limits
from raftcache.resp.calls import Call, Reply
from raftcache.resp.errors import wrong_args
from raftcache.resp.protocol import RespError, Verbatim
from raftcache.resp.state import ClientState
from raftcache.resp.topology import Shard, Topology, cluster_node_id, split_address
from raftcache.slots import key_slot

CROSSSLOT: Final = RespError("CROSSSLOT Keys in request don't hash to the same slot")
CLUSTERDOWN: Final = RespError("CLUSTERDOWN The cluster is down")
DISABLED: Final = RespError("ERR This instance has cluster support disabled")

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
    or None to run it (see the module docstring). On the plain port of a sharded store:
    ``CROSSSLOT`` for a call that would have to be atomic across groups (``spans_groups``)."""
    server = client.server
    topology: Topology | None = server.topology
    if not server.cluster_mode or topology is None or not call.keys:
        return CROSSSLOT if spans_groups(client, call) else None
    slot = _one_slot(call.keys)
    if slot is None:
        return CROSSSLOT
    shard = topology.shard_of(slot)
    leader = shard.leader
    if leader == topology.node.node_id:
        return None
    if not call.writes and client.consistency == "stale" and shard.hosted:
        return None  # READONLY: this replica answers reads, leader or not
    address = None if leader is None else topology.address_of(leader)
    if address is None:
        return CLUSTERDOWN
    return RespError(f"MOVED {slot} {address}")


def spans_groups(client: ClientState, call: Call) -> bool:
    """Whether ``call``, on a sharded store, writes keys of several groups and is not a mere
    fan-out (DEL, UNLINK: deletes split by group): it could not be atomic (MSET)."""
    store = getattr(client.server, "store", None)  # (fakes of one group have none)
    if store is None or not call.writes or call.splits or len(call.keys) < 2:
        return False
    first = store.group_of(call.keys[0])
    return any(store.group_of(key) != first for key in call.keys[1:])


def joins_group(client: ClientState, queued: Sequence[Call], call: Call) -> bool:
    """On a sharded store: whether ``call``'s keys lie in the group of the transaction
    ``queued`` so far (one key of theirs stands for all, as in ``joins_slot``)."""
    store = getattr(client.server, "store", None)
    if store is None:
        return True
    first = next((c.keys[0] for c in queued if c.keys), None)
    keys = list(call.keys) if first is None else [first, *call.keys]
    if not keys:
        return True
    group = store.group_of(keys[0])
    return all(store.group_of(key) == group for key in keys[1:])


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
        view = _VIEWS[sub]
        polled = None if sub == "MYID" else topology.settle()
        if polled is None:
            return view(_View(topology))
        return _after(polled, view, topology)


async def _after(
    polled: Awaitable[None], view: Callable[[_View], Reply], topology: Topology
) -> Reply:
    """``view`` once the topology's awaited poll is over (or its bound passed)."""
    await polled
    return view(_View(topology))


_Member = tuple[str, str, int, bool]  # id, host, port, down


class _View:
    """The shards as a cluster client sees them: each group's leader is its master, its other
    voters its replicas; a member that stopped answering polls is down (left out of SLOTS and
    SHARDS, ``fail`` in NODES). With one group: one shard of every slot."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.me = topology.node.node_id
        self.term = topology.node.current_term
        self.shards = topology.shards()
        self.members: list[_Member] = []
        for member in topology.members():
            advertised = topology.advertised(member)
            if advertised is None or not advertised.best:
                continue
            try:
                host, port = split_address(advertised.best)
            except ValueError:  # this node's own, misconfigured: advertise nothing for it
                continue
            self.members.append((member, host, port, topology.is_down(member)))
        self.by_id = {m[0]: m for m in self.members}

    def master(self, shard: Shard) -> _Member | None:
        """The shard's leader, when it is known, advertised and not down."""
        found = None if shard.leader is None else self.by_id.get(shard.leader)
        return None if found is None or found[3] else found

    def replicas(self, shard: Shard) -> list[_Member]:
        """The shard's other voters that are advertised and up, in member order."""
        voters = set(shard.members)
        return [m for m in self.members if m[0] in voters and m[0] != shard.leader and not m[3]]

    def in_shard(self, shard: Shard) -> list[_Member]:
        """The shard's advertised voters, down or not, in member order."""
        voters = set(shard.members)
        return [m for m in self.members if m[0] in voters]


def _slots(view: _View) -> Reply:
    """One entry per served shard, in slot order: its master, then its replicas — but a member
    that masters a later shard is not yet listed as a replica. Cluster clients (redis-py)
    take a node for a master or a replica by where it first appears, and a store can be both;
    one taken for a replica would miss the commands sent to every master (SCAN, FLUSHALL)."""
    masters = [view.master(shard) for shard in view.shards]
    first_led: dict[str, int] = {}
    for position, master in enumerate(masters):
        if master is not None:
            first_led.setdefault(master[0], position)
    entries: list[Any] = []
    for position, (shard, master) in enumerate(zip(view.shards, masters, strict=True)):
        if master is None:
            continue  # no leader reachable: its slots are not served right now
        entry: list[Any] = [shard.first, shard.last]
        replicas = [m for m in view.replicas(shard) if first_led.get(m[0], -1) < position]
        for member, host, port, _ in [master, *replicas]:
            entry.append([host.encode(), port, cluster_node_id(member).encode()])
        entries.append(entry)
    return entries


def _shards(view: _View) -> Reply:
    entries = []
    for shard in view.shards:
        nodes = []
        for member, host, port, down in view.in_shard(shard):
            if down:
                continue
            nodes.append(
                {
                    "id": cluster_node_id(member),
                    "port": port,
                    "ip": host,
                    "endpoint": host,
                    "role": "master" if member == shard.leader else "replica",
                    "replication-offset": shard.applied if member == view.me else 0,
                    "health": "online",
                }
            )
        slots = [shard.first, shard.last] if view.master(shard) is not None else []
        entries.append({"slots": slots, "nodes": nodes})
    return entries


def _range(shard: Shard) -> str:
    return str(shard.first) if shard.first == shard.last else f"{shard.first}-{shard.last}"


def _nodes(view: _View) -> Reply:
    lines = []
    for member, host, port, down in view.members:
        led = [shard for shard in view.shards if shard.leader == member]
        master_id = "-"
        if not led:  # a replica of the first group it belongs to whose leader is advertised
            master_id = next(
                (
                    cluster_node_id(shard.leader)
                    for shard in view.shards
                    if member in shard.members
                    and shard.leader in view.by_id
                    and shard.leader is not None
                ),
                "-",
            )
        flags = ("myself," if member == view.me else "") + ("master" if led else "slave")
        flags += ",fail" if down else ""
        line = (
            f"{cluster_node_id(member)} {host}:{port}@{port + 10000} {flags} "
            f"{master_id} 0 0 {view.term} "
            f"{'disconnected' if down else 'connected'}"
        )
        lines.append(line + "".join(f" {_range(shard)}" for shard in led))
    return Verbatim("".join(line + "\n" for line in lines))


def _info(view: _View) -> Reply:
    served = [shard for shard in view.shards if view.master(shard) is not None]
    ok = len(served) == len(view.shards)
    slots_ok = sum(shard.last - shard.first + 1 for shard in served)
    masters = {shard.leader for shard in served}
    fields = {
        "cluster_state": "ok" if ok else "fail",
        "cluster_slots_assigned": slots_ok,
        "cluster_slots_ok": slots_ok,
        "cluster_slots_pfail": 0,
        "cluster_slots_fail": 0,
        "cluster_known_nodes": len(view.topology.members()),
        "cluster_size": len(masters),
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
