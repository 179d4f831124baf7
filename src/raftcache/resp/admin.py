"""Connection commands: PING, ECHO, HELLO, AUTH, SELECT, CLIENT, QUIT, RESET, READONLY,
READWRITE, and the transaction markers MULTI, EXEC, DISCARD, WATCH, UNWATCH.

Rule: these change or report the state of one connection (``ClientState``) and never touch the
cache; the connection runs them in pipeline order, so a HELLO 3 changes the encoding of every
reply after its own (its own reply is already RESP3, as in Redis). AUTH and HELLO AUTH compare
the client token (or the read-only token, which allows no write) in constant time.
MULTI/EXEC/DISCARD are markers: the connection, which owns the queue, executes them
(``raftcache.resp.connection``).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Final

from raftcache import __version__
from raftcache.resp import args
from raftcache.resp.args import Limits
from raftcache.resp.calls import Call, Reply, View
from raftcache.resp.errors import SYNTAX, WRONGPASS
from raftcache.resp.protocol import OK, RespError, Simple
from raftcache.resp.state import ClientState

REDIS_VERSION: Final = "7.0.0"  # the Redis release whose commands and replies we follow
_PONG: Final = Simple("PONG")


class Ping(Call):
    """PING [message]."""

    in_multi = True

    def __init__(self, message: bytes | None) -> None:
        self.message = message

    def simulate(self, view: View) -> Reply:
        return _PONG if self.message is None else self.message

    def run_server(self, ctx: ClientState) -> Reply:
        if ctx.proto == 2 and ctx.subscribed:  # Redis's PING in RESP2 subscribed mode
            return [b"pong", self.message or b""]
        return self.simulate(View(0.0, {}))


class Echo(Ping):
    """ECHO message."""

    def __init__(self, message: bytes) -> None:
        super().__init__(message)


class Multi(Call):
    """MULTI (executed by the connection)."""


class Exec(Call):
    """EXEC (executed by the connection)."""


class Discard(Call):
    """DISCARD (executed by the connection)."""


class Watch(Call):
    """WATCH: refused — optimistic locking across round trips is not supported. It still
    names its keys, so a cluster-mode port redirects it as Redis Cluster does (and its keys
    are the ones COMMAND GETKEYS reports)."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys

    def run_server(self, ctx: ClientState) -> Reply:
        if ctx.in_multi:
            return RespError("ERR WATCH inside MULTI is not allowed")
        return RespError(
            "ERR WATCH is not supported by raftcache (MULTI/EXEC already runs as one atomic "
            "batch, retried on conflicting writes)"
        )


class Unwatch(Call):
    """UNWATCH: nothing is ever watched."""

    def run_server(self, ctx: ClientState) -> Reply:
        return OK


def _check_token(ctx: ClientState, user: str, password: bytes) -> bool:
    """Authenticate with the client token (full access) or the read-only token."""
    server = ctx.server
    if server.client_token is None and server.client_token_ro is None:
        return True  # like Redis's default user without a password: anything goes
    if user != "default":
        return False
    for token, read_only in ((server.client_token, False), (server.client_token_ro, True)):
        if token is not None and hmac.compare_digest(password, token.encode()):
            ctx.authenticated, ctx.read_only = True, read_only
            return True
    return False  # a failed AUTH leaves an earlier authentication as it was (as Redis)


class Auth(Call):
    """AUTH [username] password: the client token; the only user is ``default``."""

    def __init__(self, user: str, password: bytes) -> None:
        self.user, self.password = user, password

    def run_server(self, ctx: ClientState) -> Reply:
        if ctx.server.client_token is None and ctx.server.client_token_ro is None:
            return RespError(
                "ERR AUTH <password> called without any password configured for the default "
                "user. Are you sure your configuration is correct?"
            )
        return OK if _check_token(ctx, self.user, self.password) else WRONGPASS


class Hello(Call):
    """HELLO [protover [AUTH username password] [SETNAME name]]."""

    def __init__(self, proto: int | None, auth: tuple[str, bytes] | None, name: str | None) -> None:
        self.proto, self.auth, self.name = proto, auth, name

    def run_server(self, ctx: ClientState) -> Reply:
        if self.proto is not None and self.proto not in (2, 3):
            return RespError("NOPROTO unsupported protocol version")
        if self.auth is not None and not _check_token(ctx, *self.auth):
            return WRONGPASS
        if not ctx.authenticated:
            return RespError(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise "
                "the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the "
                "client and select the RESP protocol version at the same time"
            )
        if self.proto is not None:
            ctx.proto = self.proto
        if self.name is not None:
            ctx.name = self.name
        return {
            "server": "redis",
            "version": REDIS_VERSION,
            "proto": ctx.proto,
            "id": ctx.id,
            "mode": "standalone",
            "role": "master",  # any node serves every command (followers forward)
            "modules": [],
            "raftcache_version": __version__,
            "raftcache_node": ctx.server.node.node_id,
        }


class Select(Call):
    """SELECT index: only database 0 exists."""

    in_multi = True

    def __init__(self, index: int) -> None:
        self.index = index

    def simulate(self, view: View) -> Reply:
        return OK if self.index == 0 else RespError("ERR DB index is out of range")

    def run_server(self, ctx: ClientState) -> Reply:
        return self.simulate(View(0.0, {}))


class Quit(Call):
    """QUIT: reply OK, then close once the reply is written."""

    def run_server(self, ctx: ClientState) -> Reply:
        ctx.closing = True
        return OK


class Reset(Call):
    """RESET: back to a fresh connection's state (RESP2, no name, not authenticated...)."""

    def run_server(self, ctx: ClientState) -> Reply:
        ctx.reset_multi()
        if ctx.server.pubsub is not None:
            ctx.server.pubsub.drop(ctx)  # RESET leaves subscribed mode, as in Redis
        ctx.proto, ctx.name, ctx.consistency = 2, None, ctx.server.read_consistency
        server = ctx.server
        ctx.authenticated = server.client_token is None and server.client_token_ro is None
        ctx.read_only = ctx.no_touch = False
        return Simple("RESET")


class ReadMode(Call):
    """READONLY (reads served by this node from its own replica, possibly stale: no leader
    round trip) and READWRITE (back to linearizable reads)."""

    def __init__(self, stale: bool) -> None:
        self.stale = stale

    def run_server(self, ctx: ClientState) -> Reply:
        ctx.consistency = "stale" if self.stale else ctx.server.read_consistency
        return OK


# --- parsers ------------------------------------------------------------------------------


def parse_ping(argv: Sequence[bytes], limits: Limits) -> Call:
    if len(argv) > 1:
        raise RespError("ERR wrong number of arguments for 'ping' command")
    return Ping(argv[0] if argv else None)


def parse_echo(argv: Sequence[bytes], limits: Limits) -> Call:
    return Echo(argv[0])


def parse_auth(argv: Sequence[bytes], limits: Limits) -> Call:
    if len(argv) > 2:
        raise SYNTAX
    user = args.text(argv[0]) if len(argv) == 2 else "default"
    return Auth(user, argv[-1])


def parse_hello(argv: Sequence[bytes], limits: Limits) -> Call:
    if not argv:
        return Hello(None, None, None)
    proto = args.integer(
        argv[0], RespError("ERR Protocol version is not an integer or out of range")
    )
    auth: tuple[str, bytes] | None = None
    name: str | None = None
    i = 1
    while i < len(argv):
        option = args.upper(argv[i])
        if option == "AUTH" and i + 2 < len(argv):
            auth = (args.text(argv[i + 1]), argv[i + 2])
            i += 3
        elif option == "SETNAME" and i + 1 < len(argv):
            name = client_name(argv[i + 1])
            i += 2
        else:
            raise RespError(f"ERR Syntax error in HELLO option '{args.text(argv[i])}'")
    return Hello(proto, auth, name)


def client_name(raw: bytes) -> str:
    """A client name: printable ASCII without spaces, as Redis requires."""
    if any(c <= 0x20 or c >= 0x7F for c in raw):
        raise RespError("ERR Client names cannot contain spaces, newlines or special characters.")
    return raw.decode("ascii")


def parse_select(argv: Sequence[bytes], limits: Limits) -> Call:
    return Select(args.integer(argv[0]))


def parse_quit(argv: Sequence[bytes], limits: Limits) -> Call:
    return Quit()


def parse_reset(argv: Sequence[bytes], limits: Limits) -> Call:
    return Reset()


def parse_readonly(argv: Sequence[bytes], limits: Limits) -> Call:
    return ReadMode(stale=True)


def parse_readwrite(argv: Sequence[bytes], limits: Limits) -> Call:
    return ReadMode(stale=False)


def parse_multi(argv: Sequence[bytes], limits: Limits) -> Call:
    return Multi()


def parse_exec(argv: Sequence[bytes], limits: Limits) -> Call:
    return Exec()


def parse_discard(argv: Sequence[bytes], limits: Limits) -> Call:
    return Discard()


def parse_watch(argv: Sequence[bytes], limits: Limits) -> Call:
    return Watch(args.keys(argv, limits))


def parse_unwatch(argv: Sequence[bytes], limits: Limits) -> Call:
    return Unwatch()
