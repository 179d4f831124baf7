"""Which requests the lean front answers itself, and what answers them.

Rule: a route is *hot* only if the lean front can serve it exactly as aiohttp does — the same
middleware chain (``app.middlewares`` around the handler aiohttp would run, built once the
application is frozen), the same handler, the same route label, and a body the front may
receive whole before the chain runs. Two kinds are hot:

- the key routes, ``GET``/``PUT``/``DELETE /v1/keys/{key}`` (handlers from ``routes_keys``),
  with bodies of at most ``LEAN_BODY_MAX`` (within the value limit for ``PUT``);
- the Raft routes mounted on the application (``POST`` to ``httpwire.PATHS``), found in the
  router as ``httpserver.RaftRoute`` handlers, with bodies up to the route's own limit — and
  only with the cluster token when the route requires one: the Raft handler checks the token
  *before* it reads a body so that an unauthenticated peer cannot make the node buffer one,
  and a request without it is handed to aiohttp, which answers it that way. Where aiohttp
  decodes request bodies itself (an embedding host's default; ``raftcache serve`` turns it off
  and lets the Raft handler decode), a body with a content coding goes to aiohttp too: it is
  aiohttp that answers those there.

Everything else (other paths, a query on a Raft path, a larger declared body, another method)
is not hot: the connection goes to aiohttp (``lean.protocol``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, cast

from aiohttp import web

from raftcache.network.httpserver import RaftRoute
from raftcache.network.httpwire import PATHS
from raftcache.server.context import CONTEXT
from raftcache.server.lean.request import KEY_MATCH, MatchInfo
from raftcache.server.routes_keys import delete_key, get_key, put_key

Chain = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The largest body a hot key request may declare; a larger one goes to aiohttp. The lean front
#: receives a body whole before the admission middleware sees the request, while aiohttp
#: streams it and charges the node's byte budget before reading (``bodies.read_body``): keeping
#: lean bodies small keeps what a connection can hold unadmitted near aiohttp's own read buffer.
#: (The Raft routes are exempt from admission and read their bodies whole anyway.)
LEAN_BODY_MAX: Final = 64 * 1024
_KEY_PREFIX: Final = b"/v1/keys/"
_RAFT_PATHS: Final = frozenset(PATHS.values())


def chain(app: web.Application, handler: Any) -> Chain:
    """``handler`` inside the application's middlewares, as aiohttp runs it."""
    # aiohttp's order: the first middleware is the outermost.
    for middleware in reversed(app.middlewares):
        handler = functools.partial(middleware, handler=handler)
    return cast(Chain, handler)


class HotRoute:
    """One hot route: its chain, its route label and the limits of the lean path."""

    __slots__ = ("body_limit", "chain", "identity_only", "match_info", "method", "raft")

    def __init__(
        self,
        method: str,
        chain: Chain,
        match_info: MatchInfo,
        body_limit: int,
        raft: RaftRoute | None = None,
        *,
        identity_only: bool = False,
    ) -> None:
        self.method = method
        self.chain = chain
        self.match_info = match_info
        self.body_limit = body_limit
        self.raft = raft
        self.identity_only = identity_only

    def admits(self, headers: Sequence[tuple[str, str]]) -> bool:
        """Whether a request with these headers may be received whole on the lean path."""
        raft = self.raft
        if raft is None:
            return True
        if self.identity_only:
            coding = _first(headers, "content-encoding")
            if coding is not None and coding.strip().lower() not in ("", "identity"):
                return False
        return raft.routes.auth is None or raft.authorized(_first(headers, "authorization"))


def _first(headers: Sequence[tuple[str, str]], lowered: str) -> str | None:
    # The first one, as ``request.headers.get`` gives it to the handler.
    return next((v for n, v in headers if n.lower() == lowered), None)


class HotRoutes:
    """The hot routes of one application (see the module rule).

    Args:
        app: the node's application, frozen.
        raft: serve its mounted Raft routes hot too (False: only the key routes).
        decompresses: aiohttp decodes request bodies on this server (``auto_decompress``).
    """

    def __init__(
        self, app: web.Application, *, raft: bool = True, decompresses: bool = False
    ) -> None:
        max_value = app[CONTEXT].settings.limits.max_value_bytes
        self.keys: dict[bytes, HotRoute] = {
            b"GET": HotRoute("GET", chain(app, get_key), KEY_MATCH, LEAN_BODY_MAX),
            b"PUT": HotRoute("PUT", chain(app, put_key), KEY_MATCH, min(max_value, LEAN_BODY_MAX)),
            b"DELETE": HotRoute("DELETE", chain(app, delete_key), KEY_MATCH, LEAN_BODY_MAX),
        }
        self.posts: dict[bytes, HotRoute] = _raft_routes(app, decompresses) if raft else {}

    def find(self, method: bytes, url: bytes) -> HotRoute | None:
        """The hot route a request line names, or None (the request goes to aiohttp)."""
        if method == b"POST":
            return self.posts.get(url)
        route = self.keys.get(method)
        if route is None or not url.startswith(_KEY_PREFIX):
            return None
        path = url.split(b"?", 1)[0]
        key = path[len(_KEY_PREFIX) :]
        hot = bool(key) and b"/" not in key and b"#" not in url and url.isascii()
        return route if hot else None


def _raft_routes(app: web.Application, decompresses: bool) -> dict[bytes, HotRoute]:
    """The Raft routes mounted on ``app``, by exact path (a query is not hot)."""
    found: dict[bytes, HotRoute] = {}
    for route in app.router.routes():
        owner = getattr(route.handler, "__self__", None)
        canonical = route.resource.canonical if route.resource is not None else None
        if route.method != "POST" or not isinstance(owner, RaftRoute):
            continue
        if canonical not in _RAFT_PATHS:
            continue
        found[canonical.encode("ascii")] = HotRoute(
            "POST",
            chain(app, route.handler),
            MatchInfo(canonical),
            owner.body_limit,
            owner,
            identity_only=decompresses,
        )
    return found
