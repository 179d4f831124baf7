"""The request object of the lean front: the part of ``aiohttp.web.Request`` the hot routes use.

Rule: the lean front (``lean.protocol``) serves the hot routes (``lean.routes``: the key routes
and the mounted Raft routes) through the *same* middleware chain and handlers as aiohttp does,
so it hands them an object that answers every attribute they read — ``method``, ``path``,
``raw_path``, ``query``, ``headers``, ``content_type``, ``content_length``,
``content.readany()``, ``app``/``config_dict``, ``match_info.route`` and the per-request
mapping (``TICKET``, ``BODY``) — with aiohttp's meaning (headers and path decoded as UTF-8 with
surrogate escapes, the query parsed by yarl, the content type by aiohttp's own parser). Nothing
else: a handler that reads more than this from a request must not be on the lean path
(``tests/server/test_lean_*`` run the key-route and Raft-route tests through it).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web
from aiohttp.helpers import parse_content_type
from multidict import CIMultiDictProxy, MultiDictProxy
from yarl import URL

#: The route pattern the metrics label lean requests with (aiohttp's ``resource.canonical``).
KEY_ROUTE: Final = "/v1/keys/{key}"


class _Resource:
    __slots__ = ("canonical",)

    def __init__(self, canonical: str) -> None:
        self.canonical = canonical


class _Route:
    __slots__ = ("resource",)

    def __init__(self, canonical: str) -> None:
        self.resource = _Resource(canonical)


class MatchInfo:
    """``request.match_info`` as the middlewares read it: the route's pattern, for its label."""

    __slots__ = ("route",)

    def __init__(self, canonical: str) -> None:
        self.route = _Route(canonical)


KEY_MATCH: Final = MatchInfo(KEY_ROUTE)


class BodyReader:
    """``request.content`` of a body already received whole: ``readany`` gives it once."""

    __slots__ = ("_body",)

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def readany(self) -> bytes:
        body, self._body = self._body, b""
        return body


class LeanRequest:
    """One request parsed by the lean front (see the module docstring).

    Args:
        app: the node's application (its context, drain and hand-over state).
        method: the request method.
        raw_path: path and query as sent.
        headers: the request headers.
        body: the whole body (the front received it before dispatching).
        version: the HTTP version as ``(major, minor)``.
        match_info: the route that matched (its label in the metrics).
    """

    __slots__ = (
        "_path",
        "_query",
        "_state",
        "app",
        "content",
        "content_length",
        "headers",
        "match_info",
        "method",
        "raw_path",
        "version",
    )

    def __init__(
        self,
        app: web.Application,
        method: str,
        raw_path: str,
        headers: CIMultiDictProxy[str],
        body: bytes,
        version: tuple[int, int],
        match_info: MatchInfo = KEY_MATCH,
    ) -> None:
        self.app = app
        self.method = method
        self.raw_path = raw_path
        self.headers = headers
        self.version = version
        self.match_info = match_info
        self.content = BodyReader(body)
        # aiohttp's content_length is the declared one (None when absent).
        declared = headers.get("Content-Length")
        self.content_length = int(declared) if declared is not None else None
        self._state: dict[Any, Any] = {}
        self._path: str | None = None
        self._query: MultiDictProxy[str] | None = None

    @property
    def config_dict(self) -> web.Application:
        # The lean front serves only the top-level app's routes: its mapping is the whole chain.
        return self.app

    @property
    def content_type(self) -> str:
        """The media type of the body, lowercase, without parameters (``web.Request``'s)."""
        raw = self.headers.get("Content-Type")
        # RFC 9110's default when there is none, as aiohttp answers.
        return "application/octet-stream" if raw is None else parse_content_type(raw)[0]

    def _url(self) -> URL:
        return URL(self.raw_path, encoded=True)

    @property
    def path(self) -> str:
        """The decoded path, as ``web.Request.path``."""
        if self._path is None:
            raw = self.raw_path.partition("?")[0]
            # Nothing to decode or normalise (no escapes, no dot segment): the raw path is it;
            # every middleware asks, so yarl is spared for the common case.
            plain = "%" not in raw and not raw.endswith(("/.", "/.."))
            self._path = raw if plain else self._url().path
        return self._path

    @property
    def query(self) -> MultiDictProxy[str]:
        """The parsed query, as ``web.Request.query``."""
        if self._query is None:
            self._query = self._url().query
        return self._query

    def __getitem__(self, key: Any) -> Any:
        return self._state[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._state[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._state

    def get(self, key: Any, default: Any = None) -> Any:
        return self._state.get(key, default)
