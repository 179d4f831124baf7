"""Who leads and who follows, as Redis replication reports it: ROLE and INFO ``replication``.

Rule: the Raft role is the replication role. The leader is the ``master``: its offset is its
commit index, its replicas the other voters whose RESP address is known, each with the
leader's commit index less that follower's lag in entries as its offset (an estimate: Raft
counts entries, not bytes). Any other node — follower, candidate — is a ``slave`` of the
leader it knows: ``connected`` while that leader's address is known and it answers the
topology's polls, ``connecting`` otherwise (no leader known: the host is "" and the port 0),
with its applied index as offset. Learners are never listed: one being added is empty until
its first snapshot installs. Addresses come from the node's topology
(``raftcache.resp.topology``: each member advertises its RESP endpoints in ``/v1/status``);
on a cluster-mode port they are the cluster-mode endpoints, elsewhere the plain ones.

A sharded store leads some groups and follows others, so no one role is true of it; what is
true is that every store serves every key on its plain port (forwarding each to its group's
leader). There it reports itself a ``master`` with offset 0 and no replicas; on a
cluster-mode port it is a ``master`` when it leads any group (as in CLUSTER NODES), else a
``slave``. Each group's role is in INFO's ``raft`` section (``raft_groups_hosted``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from raftcache.resp.args import Limits
from raftcache.resp.calls import Call, Reply
from raftcache.resp.state import ClientState, ServerState
from raftcache.resp.topology import Endpoint, endpoint


@dataclass(frozen=True, slots=True)
class Replica:
    """A follower as its leader reports it, with its estimated offset."""

    at: Endpoint
    offset: int


@dataclass(frozen=True, slots=True)
class Replication:
    """This node's replication role (see the module docstring)."""

    role: str  # "master" or "slave"
    offset: int
    #: A slave's leader (None: none known, or its address is not).
    master: Endpoint | None = None
    replicas: list[Replica] = field(default_factory=list)

    @property
    def link_up(self) -> bool:
        """Whether a slave's leader is known, advertised and answering."""
        return self.master is not None and not self.master.down


def replication(server: ServerState, *, clustered: bool = False) -> Replication:
    """This node's replication role, as ROLE and INFO report it (module docstring)."""
    store = server.store
    if store is not None:
        leads = any(r.node.status().get("role") == "leader" for r in store.replicas.values())
        return Replication("master" if leads or not clustered else "slave", 0)
    node, peers = server.node, server.peers
    status = node.status()
    me = status.get("id")
    if status.get("role") == "leader":
        commit = int(status.get("commit_index") or 0)
        lag = node.raft_stats().get("follower_lag") or {}
        replicas = []
        for member in status.get("members") or ():
            found = None if member == me else endpoint(peers, member, clustered=clustered)
            if found is not None:
                behind = lag.get(member, commit)
                replicas.append(Replica(found, max(0, commit - behind)))
        return Replication("master", commit, None, replicas)
    leader = status.get("leader")
    master = endpoint(peers, leader, clustered=clustered)
    return Replication("slave", int(status.get("last_applied") or 0), master)


def info_section(server: ServerState, *, clustered: bool) -> dict[str, Any]:
    """INFO's ``replication`` section."""
    state = replication(server, clustered=clustered)
    if state.role == "master":
        up = [r for r in state.replicas if not r.at.down]
        fields: dict[str, Any] = {"role": "master", "connected_slaves": len(up)}
        for i, replica in enumerate(up):
            fields[f"slave{i}"] = (
                f"ip={replica.at.host},port={replica.at.port},state=online,"
                f"offset={replica.offset},lag=0"
            )
        fields["master_repl_offset"] = state.offset
        return fields
    master = state.master
    return {
        "role": "slave",
        "master_host": "" if master is None else master.host,
        "master_port": 0 if master is None else master.port,
        "master_link_status": "up" if state.link_up else "down",
        "slave_repl_offset": state.offset,
        # A follower takes writes too: it forwards them to the leader.
        "slave_read_only": 0,
        "connected_slaves": 0,
        "master_repl_offset": state.offset,
    }


class Role(Call):
    """ROLE: ``[master, offset, [[host, port, offset], ...]]`` on the leader (and on a sharded
    store), ``[slave, host, port, connected|connecting, offset]`` elsewhere."""

    def run_server(self, ctx: ClientState) -> Reply:
        server = ctx.server
        state = replication(server, clustered=server.cluster_mode)
        if state.role == "master":
            replicas = [
                [r.at.host.encode(), b"%d" % r.at.port, b"%d" % r.offset]
                for r in state.replicas
                if not r.at.down
            ]
            return [b"master", state.offset, replicas]
        master = state.master
        return [
            b"slave",
            b"" if master is None else master.host.encode(),
            0 if master is None else master.port,
            b"connected" if state.link_up else b"connecting",
            state.offset,
        ]


def parse_role(argv: Sequence[bytes], limits: Limits) -> Call:
    return Role()
