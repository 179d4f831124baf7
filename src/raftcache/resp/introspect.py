"""Introspection commands: INFO (with a ``raft`` section), CLIENT, COMMAND, CONFIG, TIME, WAIT.

Rule: these report; they never read through the cluster. INFO shows this node's view (its
replica's counters, its Raft state) without a read barrier, as Redis's INFO shows one server's.
On a cluster-mode port INFO speaks as a Redis Cluster node (``redis_mode:cluster``,
``cluster_enabled:1``), which ``redis-cli --cluster check`` requires; elsewhere as a standalone
server. On either port its ``replication`` section is the Raft role: ``master`` on the leader,
``slave`` of the leader elsewhere (``raftcache.resp.replication``).
On a sharded store the counters (keyspace, memory, hits) add up the groups it hosts — the keys
it holds, as a Redis Cluster node reports its own — and the ``raft`` section is the first hosted
group's node plus ``raft_groups`` (G) and ``raft_groups_hosted`` (each hosted group's role).
TIME reads this node's clock (the one it stamps writes with), not replicated. WAIT answers how
many replicas other than the leader hold every write this connection was answered for: a write
is acknowledged once committed, and committed means on a majority of the voters, so at least
``voters // 2`` followers hold it (the fewest over the groups, on a sharded store). On the
leader of a one-group node the followers whose log has caught up with the leader's last entry
hold it too; that count may grow, so WAIT polls it until ``numreplicas`` or the timeout.
COMMAND and CONFIG GET give clients and tools (redis-cli, redis-benchmark) what they ask for at
start-up — COMMAND with each command's key-specs, and COMMAND GETKEYS, which cluster clients
(redis-py's ``RedisCluster``) ask where a ``movablekeys`` command's keys are; CONFIG SET is
refused because configuration belongs to ``raftcache serve``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any, Final

from raftcache import __version__
from raftcache.resp import args, keyspecs, replication
from raftcache.resp.admin import REDIS_VERSION, client_name
from raftcache.resp.args import Limits, Spec, arity_ok
from raftcache.resp.calls import Call, Reply, View
from raftcache.resp.errors import SYNTAX, wrong_args
from raftcache.resp.globs import compile_glob
from raftcache.resp.protocol import OK, RespError, Simple, Verbatim
from raftcache.resp.state import ClientState

_SECTIONS: Final = (
    "server",
    "clients",
    "memory",
    "stats",
    "replication",
    "cluster",
    "keyspace",
    "raft",
)


class Info(Call):
    """INFO [section ...]: ``default``, ``all`` and ``everything`` mean every section."""

    def __init__(self, sections: tuple[str, ...]) -> None:
        wanted = {s.lower() for s in sections} or {"default"}
        everything = bool(wanted & {"default", "all", "everything"})
        self.sections = [s for s in _SECTIONS if everything or s in wanted]

    async def run_server(self, ctx: ClientState) -> Reply:
        server = ctx.server
        cache = dict(await server.service.stats())
        node = server.node
        status, raft = node.status(), node.raft_stats()
        uptime = int(asyncio.get_running_loop().time() - server.started_at)
        clustered = server.cluster_mode
        hub = server.pubsub
        groups: dict[str, Any] = {}
        store = server.store
        if store is not None:
            roles = {gid: r.node.status().get("role") for gid, r in store.replicas.items()}
            groups = {
                "raft_groups": store.groups,
                "raft_groups_hosted": ",".join(f"{gid}={role}" for gid, role in roles.items()),
            }
        fields: dict[str, dict[str, Any]] = {
            "server": {
                "redis_version": REDIS_VERSION,
                "raftcache_version": __version__,
                "redis_mode": "cluster" if clustered else "standalone",
                "process_id": os.getpid(),
                "uptime_in_seconds": uptime,
            },
            "clients": {"connected_clients": len(server.clients)},
            "memory": {
                "used_memory": cache.get("bytes", 0),
                "maxmemory": cache.get("max_bytes") or 0,
            },
            "stats": {
                "total_connections_received": server.connections_total,
                "total_commands_processed": server.commands_total,
                "rejected_connections": server.rejected_total,
                "keyspace_hits": cache.get("hits", 0),
                "keyspace_misses": cache.get("misses", 0),
                "expired_keys": cache.get("expirations", 0),
                "evicted_keys": cache.get("evictions", 0),
                "forwarded_to_leader": server.router.forwarded_total,
                # This node's subscriptions (Redis's names), and what pub/sub delivered here.
                "pubsub_channels": len(hub.channels) if hub else 0,
                "pubsub_patterns": len(hub.patterns) if hub else 0,
                "pubsub_messages_applied": hub.messages_total if hub else 0,
                "pubsub_clients_disconnected": hub.disconnected_total if hub else 0,
            },
            "replication": replication.info_section(server, clustered=clustered),
            "cluster": {"cluster_enabled": int(clustered)},
            "keyspace": {"db0": f"keys={cache.get('keys', 0)},expires=0,avg_ttl=0"}
            if cache.get("keys")
            else {},
            "raft": {
                **_raft_fields(status, raft),
                **groups,
                # The cluster's command version and this node's ceiling (cache/formats.py).
                "raft_command_format": server.service.machine.command_version,
                "raft_command_format_max": getattr(
                    server.service.machine, "max_command_version", 1
                ),
            },
        }
        lines: list[str] = []
        for section in self.sections:
            if lines:
                lines.append("")
            lines.append(f"# {section.capitalize()}")
            lines += [f"{name}:{value}" for name, value in fields[section].items()]
        return Verbatim("\r\n".join(lines) + "\r\n")


def _raft_fields(status: dict[str, Any], raft: dict[str, Any]) -> dict[str, Any]:
    members = status.get("members") or []
    lag = raft.get("follower_lag") or {}
    return {
        "raft_node_id": status.get("id"),
        "raft_role": status.get("role"),
        "raft_term": status.get("term"),
        "raft_leader": status.get("leader") or "",
        "raft_commit_index": status.get("commit_index"),
        "raft_last_applied": status.get("last_applied"),
        "raft_members": ",".join(sorted(members)),
        "raft_elections": raft.get("elections", 0),
        "raft_follower_lag": ",".join(f"{peer}={n}" for peer, n in sorted(lag.items())),
    }


class Client(Call):
    """CLIENT SETNAME | GETNAME | ID | INFO | LIST | SETINFO | NO-EVICT | NO-TOUCH | REPLY."""

    def __init__(self, sub: str, argv: Sequence[bytes]) -> None:
        self.sub, self.argv = sub, argv

    def run_server(self, ctx: ClientState) -> Reply:
        sub, argv = self.sub, self.argv
        if sub == "SETNAME" and len(argv) == 1:
            ctx.name = client_name(argv[0]) or None
            return OK
        if sub == "GETNAME" and not argv:
            return None if ctx.name is None else ctx.name.encode()
        if sub == "ID" and not argv:
            return ctx.id
        if sub == "INFO" and not argv:
            return Verbatim(_client_line(ctx) + "\n")
        if sub == "LIST":
            clients = ctx.server.clients.values()
            return Verbatim("".join(_client_line(c) + "\n" for c in clients))
        if sub == "SETINFO" and len(argv) == 2:
            return _setinfo(ctx, args.upper(argv[0]), argv[1])
        if sub == "NO-TOUCH" and len(argv) == 1:
            return _no_touch(ctx, args.upper(argv[0]))
        if sub == "NO-EVICT" and len(argv) == 1:
            return OK if args.upper(argv[0]) in ("ON", "OFF") else SYNTAX
        if sub in ("SETNAME", "GETNAME", "ID", "INFO", "SETINFO", "NO-EVICT", "NO-TOUCH"):
            return wrong_args(f"client|{sub.lower()}")
        return RespError(f"ERR unknown subcommand '{sub}'. Try CLIENT HELP.")


def _no_touch(ctx: ClientState, mode: str) -> Reply:
    """CLIENT NO-TOUCH ON|OFF: whether this connection's reads leave recency alone (Redis
    7.2; RESET turns it off again). Anything but ON or OFF is Redis's syntax error."""
    if mode not in ("ON", "OFF"):
        return SYNTAX
    ctx.no_touch = mode == "ON"
    return OK


def _setinfo(ctx: ClientState, attr: str, raw: bytes) -> Reply:
    if any(c < 0x21 or c > 0x7E for c in raw):
        return RespError(f"ERR {attr} cannot contain spaces, newlines or special characters.")
    if attr == "LIB-NAME":
        ctx.lib_name = raw.decode("ascii")
    elif attr == "LIB-VER":
        ctx.lib_ver = raw.decode("ascii")
    else:
        return RespError(f"ERR Unrecognized option '{args.text(raw)}'")
    return OK


def _client_line(c: ClientState) -> str:
    multi = len(c.queue) if c.in_multi else -1
    return (
        f"id={c.id} addr={c.addr} name={c.name or ''} db=0 multi={multi} resp={c.proto} "
        f"user=default lib-name={c.lib_name or ''} lib-ver={c.lib_ver or ''} "
        f"tot-cmds={c.commands_total}"
    )


class Command(Call):
    """COMMAND [COUNT | LIST | INFO name ... | DOCS [name ...] | GETKEYS command arg ... |
    GETKEYSANDFLAGS command arg ...]."""

    def __init__(self, sub: str | None, argv: Sequence[bytes]) -> None:
        self.sub, self.argv = sub, list(argv)

    def run_server(self, ctx: ClientState) -> Reply:
        table: dict[str, Spec] = ctx.server.commands
        sub = self.sub
        names = [args.upper(n) for n in self.argv]
        if sub is None:
            return [_command_info(spec) for spec in table.values()]
        if sub == "COUNT":
            return len(table)
        if sub == "LIST":
            return [name.lower().encode() for name in table]
        if sub == "INFO":
            chosen = names or list(table)
            return [_command_info(table[n]) if n in table else None for n in chosen]
        if sub == "DOCS":
            chosen = [n for n in (names or list(table)) if n in table]
            return {n.lower(): _command_docs(table[n]) for n in chosen}
        if sub in ("GETKEYS", "GETKEYSANDFLAGS"):
            if not self.argv:
                return wrong_args(f"command|{sub.lower()}")
            return get_keys(table, self.argv, with_flags=sub == "GETKEYSANDFLAGS")
        return RespError(f"ERR unknown subcommand '{sub}'. Try COMMAND HELP.")


def get_keys(table: dict[str, Spec], argv: Sequence[bytes], *, with_flags: bool) -> Reply:
    """COMMAND GETKEYS / GETKEYSANDFLAGS of the invocation ``argv`` (its command name first),
    with Redis's checks in Redis's order: a known command, one with keys, the right number of
    arguments; then its key-specs find the keys (``raftcache.resp.keyspecs``). Arguments the
    specs cannot place (a bad key count) are Redis's "Invalid arguments" error, except for a
    command whose keys are optional (EVAL: ``no_mandatory_keys``), which has none."""
    spec = table.get(args.upper(argv[0]))
    if spec is None:
        return RespError("ERR Invalid command specified")
    if not spec.key_specs:
        return RespError("ERR The command has no key arguments")
    if not arity_ok(spec, len(argv)):
        return RespError("ERR Invalid number of arguments specified for command")
    found = keyspecs.find_keys(spec.key_specs, argv)
    if not found:
        if "no_mandatory_keys" in spec.flags:
            return []
        return RespError("ERR Invalid arguments specified for command")
    if with_flags:
        return [[argv[key.pos], keyspecs.flag_set(key.flags)] for key in found]
    return [argv[key.pos] for key in found]


def _command_info(spec: Spec) -> list[Any]:
    return [
        spec.name.lower().encode(),
        spec.arity,
        {Simple(flag) for flag in spec.flags},
        spec.first_key,
        spec.last_key,
        spec.step,
        [],
        [],
        [keyspecs.reply(key_spec) for key_spec in spec.key_specs],
        [],
    ]


def _command_docs(spec: Spec) -> dict[str, Any]:
    return {"summary": spec.summary, "since": "1.0.0", "group": spec.group}


_CONFIG: Final = {"save": "", "appendonly": "no", "databases": "1", "timeout": "0"}


class Config(Call):
    """CONFIG GET pattern ... | SET (refused) | RESETSTAT."""

    def __init__(self, sub: str, argv: Sequence[bytes]) -> None:
        self.sub, self.argv = sub, argv

    async def run_server(self, ctx: ClientState) -> Reply:
        if self.sub == "GET" and self.argv:
            stats = await ctx.server.service.stats()
            params = {**_CONFIG, "maxmemory": str(stats.get("max_bytes") or 0)}
            found: dict[str, str] = {}
            for raw in self.argv:
                _, regex = compile_glob(args.text(raw).lower())
                found.update((k, v) for k, v in params.items() if regex.fullmatch(k))
            return found
        if self.sub == "SET":
            return RespError("ERR CONFIG SET is not supported: configure raftcache serve instead")
        if self.sub == "RESETSTAT" and not self.argv:
            return OK
        return RespError(f"ERR unknown subcommand or wrong number of arguments for '{self.sub}'")


class Time(Call):
    """TIME: this node's clock as [Unix seconds, microseconds], both bulk strings."""

    in_multi = True

    def simulate(self, view: View) -> Reply:
        micros = int(view.now * 1_000_000)
        return [b"%d" % (micros // 1_000_000), b"%d" % (micros % 1_000_000)]

    def run_server(self, ctx: ClientState) -> Reply:
        return self.simulate(View(ctx.server.clock(), {}))


_WAIT_POLL_S: Final = 0.01


class Wait(Call):
    """WAIT numreplicas timeout: replicas (besides the leader) known to hold every write
    this connection was answered for (module docstring); waits up to ``timeout`` ms (0: no
    limit) while that count is below ``numreplicas`` and can still grow."""

    def __init__(self, replicas: int, timeout_ms: int) -> None:
        self.replicas, self.timeout_ms = replicas, timeout_ms

    async def run_server(self, ctx: ClientState) -> Reply:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_ms / 1000
        while True:
            count, most, grows = acknowledged_replicas(ctx)
            if count >= self.replicas or not grows:
                return count
            if (self.timeout_ms == 0 and self.replicas > most) or (
                self.timeout_ms and loop.time() >= deadline
            ):
                return count
            await asyncio.sleep(_WAIT_POLL_S)


def acknowledged_replicas(ctx: ClientState) -> tuple[int, int, bool]:
    """(followers holding every acknowledged write, followers there are, whether the first
    may grow while one waits): see the module docstring."""
    server = ctx.server
    store = server.store
    if store is not None:
        sizes = [
            len(store.replicas[gid].node.members) if gid in store.replicas else len(stores)
            for gid, stores in store.placement.items()
        ]
        fewest = min(sizes, default=1)
        return fewest // 2, fewest - 1, False
    status = server.node.status()
    voters: list[str] = list(status.get("members") or ())
    count = len(voters) // 2
    most = max(len(voters) - 1, 0)
    if status.get("role") != "leader":
        return count, most, False
    lag = server.node.raft_stats().get("follower_lag") or {}
    caught_up = sum(1 for v in voters if v != status.get("id") and lag.get(v) == 0)
    return max(count, caught_up), most, True


def parse_time(argv: Sequence[bytes], limits: Limits) -> Call:
    return Time()


def parse_wait(argv: Sequence[bytes], limits: Limits) -> Call:
    replicas = args.integer(argv[0])
    timeout = args.integer(argv[1], RespError("ERR timeout is not an integer or out of range"))
    if timeout < 0:
        raise RespError("ERR timeout is negative")
    return Wait(replicas, timeout)


def parse_info(argv: Sequence[bytes], limits: Limits) -> Call:
    return Info(tuple(args.text(a) for a in argv))


def parse_client(argv: Sequence[bytes], limits: Limits) -> Call:
    return Client(args.upper(argv[0]), argv[1:])


def parse_command(argv: Sequence[bytes], limits: Limits) -> Call:
    if not argv:
        return Command(None, ())
    return Command(args.upper(argv[0]), argv[1:])


def parse_config(argv: Sequence[bytes], limits: Limits) -> Call:
    return Config(args.upper(argv[0]), argv[1:])
