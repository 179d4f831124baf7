"""SENTINEL: enough of Redis Sentinel's protocol for clients to find the leader.

Rule: every node is also a sentinel, on its RESP ports (plain and cluster-mode alike), for one
service (``--sentinel-name``, default ``raftcache``). Nothing is monitored or voted here: Raft
elects the leader, and the answers read this node's view of it — its Raft state plus the
members' RESP addresses from the topology's polls (``raftcache.resp.topology``):

- the master is the leader this node knows, at its plain RESP port (a Sentinel client sends
  every command there and follows no ``MOVED``); flagged ``s_down,o_down`` when no leader is
  known, its address is not, or its last polls failed — clients then ask the next sentinel.
  With no leader known the master is the last one this server saw (``ip`` "" and port 0
  before any: ``GET-MASTER-ADDR-BY-NAME`` then answers nil);
- the replicas are the other voters (learners are left out: empty until their first
  snapshot), flagged ``s_down`` when their polls fail; their offsets are known on the leader
  only (its commit index less their lag), 0 elsewhere;
- the sentinels are the other members with a plain RESP port, so a client that knew one
  node can learn the others (``SENTINEL SENTINELS``) and still find the leader when that node
  dies.

A sharded store leads nothing in particular, but every store serves every key on its plain
port (forwarding each to its group's leader): the master it reports is itself, the replicas
and sentinels the other stores. Failover then means moving to another live store, which
asking the sentinels in turn does.

Commands that configure or steer a Sentinel (MONITOR, REMOVE, SET, FAILOVER, RESET, CONFIG…)
answer an error: there is nothing to configure, and a leader change is ``raftcache``'s
``/v1/leader/transfer``. An unknown service name answers Redis's ``No such master
with that name``. Replies are what Redis Sentinel sends: flat field/value arrays in RESP2,
maps in RESP3, every value a string.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from raftcache.resp import args
from raftcache.resp.args import Limits
from raftcache.resp.calls import Call, Reply
from raftcache.resp.errors import wrong_args
from raftcache.resp.protocol import RespError, Simple
from raftcache.resp.state import ClientState, ServerState
from raftcache.resp.topology import DOWN_AFTER, Endpoint, cluster_node_id, endpoint

NO_SUCH_MASTER: Final = RespError("ERR No such master with that name")

_HELP: Final = (
    "SENTINEL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET-MASTER-ADDR-BY-NAME <name>",
    "    Return the ip and port number of the master with that name.",
    "MASTERS",
    "    Show a list of monitored masters and their state.",
    "MASTER <name>",
    "    Show the state and info of the specified master.",
    "REPLICAS <name>",
    "    Show a list of replicas for this master and their state.",
    "SENTINELS <name>",
    "    Show a list of Sentinel instances for this master and their state.",
    "CKQUORUM <name>",
    "    Check if the current Sentinel configuration is able to reach the quorum.",
    "MYID",
    "    Return the ID of the Sentinel instance.",
    "HELP",
    "    Print this help.",
)
_STEERING: Final = frozenset(
    {
        "MONITOR",
        "REMOVE",
        "SET",
        "FAILOVER",
        "RESET",
        "CONFIG",
        "FLUSHCONFIG",
        "IS-MASTER-DOWN-BY-ADDR",
        "SIMULATE-FAILURE",
        "DEBUG",
        "INFO-CACHE",
        "PENDING-SCRIPTS",
    }
)
_NAMED: Final = frozenset(
    {"GET-MASTER-ADDR-BY-NAME", "MASTER", "REPLICAS", "SLAVES", "SENTINELS", "CKQUORUM"}
)


class _Service:
    """The one service as this node sees it now: master, replicas, sentinels, quorum."""

    def __init__(self, server: ServerState) -> None:
        peers = server.peers
        self.name = server.sentinel_name
        self.down_after_ms = DOWN_AFTER * int((peers.refresh_s if peers else 1.0) * 1000)
        store = server.store
        if store is not None:  # every store is an entry point for every key (module docstring)
            me = store.store_id
            members = sorted({s for stores in store.placement.values() for s in stores})
            self.leader: str | None = me
            offsets: dict[str, int] = {}
            self.epoch = max((r.node.current_term for r in store.replicas.values()), default=0)
        else:
            status = server.node.status()
            me = status.get("id") or ""
            members = list(status.get("members") or ())
            self.leader = status.get("leader")
            self.epoch = int(status.get("term") or 0)
            offsets = {}
            if status.get("role") == "leader":
                commit = int(status.get("commit_index") or 0)
                lag = server.node.raft_stats().get("follower_lag") or {}
                offsets = {m: max(0, commit - lag.get(m, commit)) for m in members}
        self.me = me
        self.offsets = offsets
        self.quorum = len(members) // 2 + 1
        found = {m: endpoint(peers, m) for m in members}
        self.at: dict[str, Endpoint] = {m: e for m, e in found.items() if e is not None}
        master = None if self.leader is None else self.at.get(self.leader)
        if master is not None:
            server.sentinel_master = master
        self.master = master
        self.last_master: Endpoint | None = master or server.sentinel_master
        self.replicas = [self.at[m] for m in members if m != self.leader and m in self.at]
        self.sentinels = [self.at[m] for m in members if m != me and m in self.at]

    def master_state(self) -> dict[str, str]:
        known = self.master
        shown = self.last_master
        flags = "master" if known is not None and not known.down else "master,s_down,o_down"
        return {
            "name": self.name,
            "ip": "" if shown is None else shown.host,
            "port": str(0 if shown is None else shown.port),
            "runid": "" if shown is None else cluster_node_id(shown.node_id),
            "flags": flags,
            **_LINK,
            "down-after-milliseconds": str(self.down_after_ms),
            "info-refresh": "0",
            "role-reported": "master",
            "role-reported-time": "0",
            "config-epoch": str(self.epoch),
            "num-slaves": str(len(self.replicas)),
            "num-other-sentinels": str(len(self.sentinels)),
            "quorum": str(self.quorum),
            "failover-timeout": "0",
            "parallel-syncs": "1",
        }

    def replica_state(self, at: Endpoint) -> dict[str, str]:
        master = self.master
        return {
            "name": f"{at.host}:{at.port}",
            "ip": at.host,
            "port": str(at.port),
            "runid": cluster_node_id(at.node_id),
            "flags": "slave,s_down" if at.down else "slave",
            **_LINK,
            "down-after-milliseconds": str(self.down_after_ms),
            "info-refresh": "0",
            "role-reported": "slave",
            "role-reported-time": "0",
            "master-link-down-time": "0",
            "master-link-status": "ok" if master is not None and not master.down else "err",
            "master-host": "" if master is None else master.host,
            "master-port": str(0 if master is None else master.port),
            "slave-priority": "100",
            "slave-repl-offset": str(self.offsets.get(at.node_id, 0)),
            "replica-announced": "1",
        }

    def sentinel_state(self, at: Endpoint) -> dict[str, str]:
        runid = cluster_node_id(at.node_id)
        return {
            "name": runid,
            "ip": at.host,
            "port": str(at.port),
            "runid": runid,
            "flags": "sentinel,s_down" if at.down else "sentinel",
            **_LINK,
            "down-after-milliseconds": str(self.down_after_ms),
            "last-hello-message": "0",
            "voted-leader": "?",
            "voted-leader-epoch": "0",
        }


_LINK: Final = {
    "link-pending-commands": "0",
    "link-refcount": "1",
    "last-ping-sent": "0",
    "last-ok-ping-reply": "0",
    "last-ping-reply": "0",
}


class Sentinel(Call):
    """SENTINEL MASTERS | MASTER | REPLICAS | SLAVES | SENTINELS | GET-MASTER-ADDR-BY-NAME |
    CKQUORUM | MYID | HELP (module docstring)."""

    def __init__(self, sub: str, argv: Sequence[bytes]) -> None:
        self.sub, self.argv = sub, argv

    def run_server(self, ctx: ClientState) -> Reply:
        sub, argv, server = self.sub, self.argv, ctx.server
        if sub == "HELP":
            return [Simple(line) for line in _HELP] if not argv else wrong_args("sentinel|help")
        if sub in _STEERING:
            return RespError(
                f"ERR SENTINEL {sub} is not supported: raftcache elects its leader with Raft "
                "(move it with POST /v1/leader/transfer)"
            )
        if sub == "MYID":
            return _myid(server) if not argv else wrong_args("sentinel|myid")
        if sub == "MASTERS":
            if argv:
                return wrong_args("sentinel|masters")
            return [_Service(server).master_state()]
        if sub not in _NAMED:
            return RespError(f"ERR unknown subcommand '{sub}'. Try SENTINEL HELP.")
        if len(argv) != 1:
            return wrong_args(f"sentinel|{sub.lower()}")
        if args.text(argv[0]) != server.sentinel_name:
            return None if sub == "GET-MASTER-ADDR-BY-NAME" else NO_SUCH_MASTER
        service = _Service(server)
        if sub == "GET-MASTER-ADDR-BY-NAME":
            shown = service.last_master
            return None if shown is None else [shown.host.encode(), b"%d" % shown.port]
        if sub == "MASTER":
            return service.master_state()
        if sub in ("REPLICAS", "SLAVES"):
            return [service.replica_state(at) for at in service.replicas]
        if sub == "SENTINELS":
            return [service.sentinel_state(at) for at in service.sentinels]
        return _ckquorum(service)


def _myid(server: ServerState) -> Reply:
    me = server.store.store_id if server.store is not None else server.node.node_id
    return cluster_node_id(me).encode()


def _ckquorum(service: _Service) -> Reply:
    """CKQUORUM: whether the sentinels that answer (this node and the others not down) reach
    the quorum — here, whether a majority of the voters answers, which a leader needs."""
    usable = 1 + sum(1 for at in service.sentinels if not at.down)
    if usable < service.quorum:
        return RespError(
            f"NOQUORUM {usable} usable Sentinels. Not enough available Sentinels to reach the "
            "specified quorum for this master"
        )
    return Simple(f"OK {usable} usable Sentinels. Quorum and failover authorization can be reached")


def parse_sentinel(argv: Sequence[bytes], limits: Limits) -> Call:
    return Sentinel(args.upper(argv[0]), argv[1:])
