"""HTTP routes of the live dashboard: the page at ``/``, its two static files, and the cluster view.

Rule: the page is static package data (no build step, no CDN, nothing fetched at run time) read
once when the routes are added; everything live comes from ``GET /dashboard/cluster.json``, this
node's poll of every peer (``ClusterPoller``, reduced by ``cluster_view``). The routes hold no
authority of their own: the app's middlewares (client token, admission, metrics) apply to them as
to any route, and peers are asked with the caller's own ``Authorization`` header. The page is
served with a strict Content-Security-Policy (scripts and styles from this origin only), and its
script writes peer data with ``textContent`` only.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib import resources

import orjson
from aiohttp import web

from raftcache.dashboard.poll import DEFAULT_TIMEOUT_S, ClusterPoller
from raftcache.dashboard.view import cluster_view

PAGE_PATH = "/"
CLUSTER_PATH = "/dashboard/cluster.json"
#: Static files under ``/dashboard/``: file name in ``static/`` → content type.
ASSETS = {
    "index.html": "text/html",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
ASSET_PATHS = {
    "/dashboard/dashboard.js": "dashboard.js",
    "/dashboard/dashboard.css": "dashboard.css",
}

#: Nothing but this origin: the page needs no inline script or style, no frame, no form target.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

POLLER = web.AppKey("raftcache.dashboard.poller", ClusterPoller)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Asset:
    """One static file, read once: body, content type and a strong ETag of the body."""

    body: bytes
    content_type: str
    etag: str


def load_asset(name: str) -> Asset:
    """Read ``static/<name>`` from the package (works from a wheel and an editable install)."""
    body = resources.files("raftcache.dashboard").joinpath("static", name).read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:20]
    return Asset(body, ASSETS[name], f'"{digest}"')


def add_dashboard_routes(
    app: web.Application,
    *,
    peer_urls: Mapping[str, str],
    self_id: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Serve the dashboard on ``app``: ``GET /``, its static files and the cluster view.

    Call before the app starts (routes freeze then). The app's cleanup closes the poller.

    Args:
        app: the node's aiohttp application.
        peer_urls: node id → base URL of every node to show, this node included (the
            ``--peers`` map).
        self_id: the id of the node serving the page ("served by" on the page).
        ssl_context: TLS context for ``https://`` peers (the one the node forwards with).
        timeout_s: bound on each peer's poll.
    """
    poller = ClusterPoller(peer_urls, timeout_s=timeout_s, ssl_context=ssl_context)
    app[POLLER] = poller
    page = load_asset("index.html")
    app.router.add_get(PAGE_PATH, _static_handler(page))
    for path, name in ASSET_PATHS.items():
        app.router.add_get(path, _static_handler(load_asset(name)))
    app.router.add_get(CLUSTER_PATH, _cluster_handler(poller, self_id))

    async def close_poller(_: web.Application) -> None:
        await poller.close()

    app.on_cleanup.append(close_poller)


def _static_handler(asset: Asset) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        headers = {
            **_COMMON_HEADERS,
            "ETag": asset.etag,
            # Revalidate every time: after an upgrade the new page and script load together.
            "Cache-Control": "no-cache",
        }
        if asset.content_type == "text/html":
            headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        if request.headers.get("If-None-Match") == asset.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(
            body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers
        )

    return handler


def _cluster_handler(poller: ClusterPoller, self_id: str | None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        answers = await poller.poll(request.headers.get("Authorization"))
        body = cluster_view(answers, self_id=self_id)
        body["poll_timeout_s"] = poller.timeout_s
        return web.Response(
            body=orjson.dumps(body),
            content_type="application/json",
            headers={**_COMMON_HEADERS, "Cache-Control": "no-store"},
        )

    return handler
