"""The query parameters each route accepts: any other is a 400 that names it.

Rule: ``ACCEPTED`` lists, per route pattern and method, every query parameter its handler
reads; ``query_middleware`` answers 400 for a request carrying any other, before the handler
runs, on both fronts (the lean front runs the same chain). A misspelt ``?tll=30`` was silently
ignored before — a write stored without its TTL. A route missing from the table accepts none
(``tests/server/test_query_params.py`` checks that every route of a node is listed and that the
OpenAPI document states no parameter the table lacks). A request that matched no route is left
to the router's own 404/405. ``HEAD`` is ``GET``'s. On a store of many groups every route also
takes ``group`` (``?group=gN``, ``server.groups``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from aiohttp import web

from raftcache.server.errors import bad_request
from raftcache.server.forwarding import Handler

__all__ = ["ACCEPTED", "STORE_EXTRA", "STORE_QUERY", "accepted", "query_middleware"]

_KEY = "/v1/keys/{key}"
_READ = frozenset({"consistency", "touch"})
_NONE: Final = frozenset[str]()

#: (method, route pattern) → the query parameters its handler reads.
ACCEPTED: Final[Mapping[tuple[str, str], frozenset[str]]] = {
    ("GET", _KEY): _READ,
    ("PUT", _KEY): frozenset({"ttl"}),
    ("GET", "/v1/keys"): frozenset({"prefix", "after", "limit", "consistency"}),
    ("DELETE", "/v1/keys"): frozenset({"prefix"}),
    ("POST", "/v1/mget"): _READ,
    ("GET", "/v1/watch"): frozenset({"prefix", "from_version"}),
    ("DELETE", "/v1/members/{id}"): frozenset({"config_index"}),
    ("GET", "/raft/digest"): frozenset({"index"}),
    # The meta group's routes (stores): a request sent on once carries ``forwarded``.
    ("GET", "/raft/meta/map"): frozenset({"consistency", "forwarded"}),
    ("POST", "/raft/meta/stores"): frozenset({"forwarded"}),
    ("PUT", "/raft/meta/stores/{store}"): frozenset({"forwarded"}),
    ("DELETE", "/raft/meta/members/{id}"): frozenset({"config_index"}),
    ("DELETE", "/raft/store/replicas/{group}"): frozenset({"replica", "config_index"}),
    # Every other route reads no query parameter (listed so the table names every route).
    **{
        (method, path): _NONE
        for method, path in (
            ("DELETE", _KEY),
            ("POST", _KEY + "/incr"),
            ("POST", _KEY + "/ttl"),
            ("POST", "/v1/batch"),
            ("GET", "/v1/status"),
            ("GET", "/v1/stats"),
            ("GET", "/v1/health"),
            ("GET", "/v1/shards"),
            ("GET", "/metrics"),
            ("GET", "/openapi.json"),
            ("POST", "/v1/members"),
            ("POST", "/v1/leader/transfer"),
            ("POST", "/v1/snapshot"),
            ("POST", "/v1/scripts"),
            ("POST", "/v1/publish"),
            ("GET", "/v1/backup"),
            ("POST", "/v1/restore"),
            ("GET", "/v1/alarms"),
            ("DELETE", "/v1/alarms/{id}"),
            ("POST", "/raft/digest/kick"),
            ("GET", "/"),
            ("GET", "/dashboard/cluster.json"),
            ("GET", "/dashboard/dashboard.js"),
            ("GET", "/dashboard/dashboard.css"),
            ("POST", "/raft/request-vote"),
            ("POST", "/raft/append-entries"),
            ("POST", "/raft/install-snapshot"),
            ("POST", "/raft/append-batch"),
            ("GET", "/raft/v1/stream"),
            ("GET", "/raft/store/groups"),
            ("POST", "/raft/store/replicas"),
            ("PUT", "/raft/store/placement/{group}"),
            ("POST", "/raft/meta/members"),
            ("POST", "/raft/meta/leader/transfer"),
        )
    },
}

#: What every route of a store hosting many groups takes on top (``server.groups``).
STORE_EXTRA: Final = frozenset({"group"})
#: The app key saying whether this application is a store's (``create_app`` and
#: ``create_store_app`` set it: a lookup that finds the key is the cheap one).
STORE_QUERY: Final = web.AppKey("store_query", bool)
#: The catch-all that answers a malformed key path itself (``routes_keys``): not checked here.
_UNCHECKED: Final = frozenset({"/v1/keys/{rest}"})


def accepted(method: str, canonical: str, *, store: bool = False) -> frozenset[str]:
    """The query parameters ``method`` on the route ``canonical`` accepts."""
    names = ACCEPTED.get(("GET" if method == "HEAD" else method, canonical), _NONE)
    return names | STORE_EXTRA if store else names


@web.middleware
async def query_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a query parameter the route does not read (see the module rule)."""
    if "?" in request.raw_path:  # else nothing to check, at the cost of one scan
        route = request.match_info.route
        resource = route.resource if route is not None else None
        canonical = resource.canonical if resource is not None else None
        if canonical is not None and canonical not in _UNCHECKED:
            store = request.config_dict.get(STORE_QUERY, False)
            known = accepted(request.method, canonical, store=store)
            for name in request.query:
                if name not in known:
                    listed = ", ".join(sorted(known)) if known else "none"
                    raise bad_request(
                        f"unknown query parameter {name!r} for {request.method} {canonical} "
                        f"(accepted: {listed})"
                    )
    return await handler(request)
