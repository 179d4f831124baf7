"""HTTP/JSON transport on aiohttp (SPEC §2).

Rule: one ``POST`` per RPC carrying the message in the JSON wire codec; the routes, the error
bodies and the mapping of statuses back to the ``NetworkError`` family are the wire contract of
``raftcache.network.httpwire``.

On the client: an unknown target id is permanent ("No address configured for node X");
connection refused or reset by a known peer is transient; a timeout is ``NetworkTimeoutError``;
a certificate that does not verify is permanent (misconfiguration).

The server checks the cluster token before it reads the body (an unauthenticated peer cannot
make it buffer 64 MiB) with a constant-time comparison, and ignores Content-Type: whatever the
header says, the body is parsed as JSON and rejected with 400 if it is not a valid message.

Mounting: ``HttpNetwork(..., app=existing)`` or ``net.mount(existing)`` before the application
starts adds the three routes to an aiohttp application the caller serves (one port for Raft and
the client API); ``start()`` then opens no listener of its own, only the client session, and the
TLS files configure the client side only (the caller's server does TLS). Mounted routes enforce
``client_max_size`` themselves, whatever the application's own limit.
"""

from __future__ import annotations

import hmac
import io
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from yarl import URL

from raftcache.network import codec
from raftcache.network.errors import (
    NetworkError,
    NetworkTimeoutError,
    no_address,
    no_handlers,
    remote_handler_error,
)
from raftcache.network.httpwire import (
    DEFAULT_CLIENT_MAX_SIZE,
    HANDLER_OF,
    JSON,
    PATHS,
    error_response,
    json_errors,
    status_error,
)
from raftcache.network.interface import NetworkInterface, RpcHandlers
from raftcache.network.tls import client_ssl_context, server_ssl_context
from raftcache.raft.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    RequestVoteRequest,
    RequestVoteResponse,
)

__all__ = ["HttpNetwork"]

logger = logging.getLogger(__name__)

Resp = TypeVar("Resp")

_INDEX = {cls: i for i, cls in enumerate(PATHS)}  # a request type's slot in a peer's URL tuple
_RAW_BODY_MAX = 1024 * 1024


class _BodyTooLarge(Exception):
    pass


class HttpNetwork(NetworkInterface):
    """Raft RPCs over HTTP/JSON, with keep-alive pooling, a cluster token and (m)TLS.

    Args:
        node_id: this node's id.
        port: port to listen on (``0``: any free port, read ``.port`` after ``start()``).
        host: address to listen on.
        node_addresses: node id → base URL (``"http://127.0.0.1:8001"``, ``https://`` for TLS).
        timeout: per-RPC timeout in seconds (the whole request, connection included).
        cluster_token: shared secret; inbound requests need ``Authorization: Bearer <token>``
            and outbound ones carry it.
        ssl_certfile: PEM certificate of this node: served, and presented to mTLS peers.
        ssl_keyfile: PEM private key of ``ssl_certfile`` (None: inside it).
        ssl_cafile: CA that signs peer certificates (server and client side).
        require_client_cert: the server demands a client certificate (mutual TLS).
        client_max_size: largest accepted request body, in bytes.
        max_connections: size of the keep-alive connection pool.
        keepalive_timeout: seconds an idle pooled connection is kept.
        shutdown_timeout: seconds ``stop()`` lets running handlers finish before cancelling them.
        app: an aiohttp application to mount the routes on instead of listening (see module).

    Example:
        >>> net = HttpNetwork("n1", port=0, node_addresses={"n2": "http://127.0.0.1:8002"})
        >>> net.port
        0
    """

    def __init__(
        self,
        node_id: str,
        *,
        port: int,
        host: str = "127.0.0.1",
        node_addresses: Mapping[str, str],
        timeout: float = 5.0,
        cluster_token: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_cafile: str | None = None,
        require_client_cert: bool = False,
        client_max_size: int = DEFAULT_CLIENT_MAX_SIZE,
        max_connections: int = 50,
        keepalive_timeout: float = 30.0,
        shutdown_timeout: float = 1.0,
        app: web.Application | None = None,
    ) -> None:
        if timeout <= 0 or client_max_size <= 0 or max_connections <= 0:
            raise ValueError("timeout, client_max_size and max_connections must be > 0")
        self.node_id = node_id
        self.host = host
        self.port = port
        self.timeout = timeout
        self.client_max_size = client_max_size
        self.max_connections = max_connections
        self.keepalive_timeout = keepalive_timeout
        self.shutdown_timeout = shutdown_timeout
        self._addresses: dict[str, str] = {}
        self._urls: dict[str, tuple[URL, ...]] = {}
        for peer, url in node_addresses.items():
            self.set_peer_address(peer, url)
        self._expected_auth: bytes | None = None
        self._headers: dict[str, str] = {"Content-Type": JSON, "Accept": JSON}
        if cluster_token:
            self._expected_auth = f"Bearer {cluster_token}".encode()
            self._headers["Authorization"] = f"Bearer {cluster_token}"
        self._server_ssl: ssl.SSLContext | None = None
        if ssl_certfile is not None and app is None:
            self._server_ssl = server_ssl_context(
                ssl_certfile, ssl_keyfile, ssl_cafile, require_client_cert=require_client_cert
            )
        # Without TLS files, https URLs use aiohttp's default context (the system trust store).
        self._client_ssl: ssl.SSLContext | bool = True
        if ssl_cafile is not None or ssl_certfile is not None:
            self._client_ssl = client_ssl_context(ssl_cafile, ssl_certfile, ssl_keyfile)
        self._handlers: RpcHandlers | None = None
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._mounted = False
        if app is not None:
            self.mount(app)

    # -- configuration --------------------------------------------------------------------------

    @property
    def node_addresses(self) -> dict[str, str]:
        """A copy of the current id → base URL map."""
        return dict(self._addresses)

    @property
    def started(self) -> bool:
        return self._session is not None

    def set_peer_address(self, node_id: str, address: str | None) -> None:
        """Add, change (``address``) or forget (``None``) a peer's base URL."""
        if address is None:
            self._addresses.pop(node_id, None)
            self._urls.pop(node_id, None)
            return
        base = URL(address.rstrip("/"))
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError(f"node {node_id}: not an http(s) base URL: {address!r}")
        self._addresses[node_id] = address
        # Parsed once here rather than on every request: the leader sends thousands per second.
        self._urls[node_id] = tuple(URL(str(base) + path) for path in PATHS.values())

    def routes(self) -> list[web.RouteDef]:
        """The three ``POST /raft/...`` routes, for ``app.add_routes`` on any application."""
        # Unnamed: route names must be unique per application, and the host app owns its names.
        return [web.post(path, self._make_route(cls)) for cls, path in PATHS.items()]

    def mount(self, app: web.Application) -> None:
        """Serve the Raft routes on ``app`` (before it starts); ``start()`` will not listen."""
        app.add_routes(self.routes())
        self._mounted = True

    # -- lifecycle ------------------------------------------------------------------------------

    def register_handlers(self, handlers: RpcHandlers) -> None:
        self._handlers = handlers

    async def start(self) -> None:
        """Open the client session and, unless mounted, the listener. Idempotent."""
        if self._session is not None:
            return
        if not self._mounted:
            await self._listen()
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            keepalive_timeout=self.keepalive_timeout,
            ssl=self._client_ssl,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            # Peers set no cookies; the dummy jar skips cookie filtering on every request.
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def _listen(self) -> None:
        app = web.Application(client_max_size=self.client_max_size, middlewares=[json_errors])
        app.add_routes(self.routes())
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=self.shutdown_timeout
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, ssl_context=self._server_ssl)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        # Keep the port chosen for port=0: a restarted node must stay at the address peers know.
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Close the client session and the listener (in-flight handlers are cancelled)."""
        session, self._session = self._session, None
        runner, self._runner = self._runner, None
        if session is not None:
            await session.close()
        if runner is not None:
            await runner.cleanup()

    # -- client ---------------------------------------------------------------------------------

    async def send_request_vote(self, target: str, req: RequestVoteRequest) -> RequestVoteResponse:
        return await self._post(target, req, RequestVoteResponse)

    async def send_append_entries(
        self, target: str, req: AppendEntriesRequest
    ) -> AppendEntriesResponse:
        return await self._post(target, req, AppendEntriesResponse)

    async def send_install_snapshot(
        self, target: str, req: InstallSnapshotRequest
    ) -> InstallSnapshotResponse:
        return await self._post(target, req, InstallSnapshotResponse)

    async def _post(self, target: str, req: Any, response_cls: type[Resp]) -> Resp:
        urls = self._urls.get(target)
        if urls is None:
            raise no_address(target)
        session = self._session
        if session is None:
            raise NetworkError(f"HttpNetwork of node {self.node_id} is not started", permanent=True)
        url = urls[_INDEX[type(req)]]
        body = codec.encode(req)
        # aiohttp warns (ResourceWarning) about raw bodies over 1 MiB, which a snapshot chunk is
        # once base64-encoded; a BytesIO body is streamed in pieces instead.
        data: bytes | io.BytesIO = body if len(body) <= _RAW_BODY_MAX else io.BytesIO(body)
        try:
            async with session.post(url, data=data, headers=self._headers) as resp:
                status = resp.status
                answer = await resp.read()
        except TimeoutError:
            raise NetworkTimeoutError(
                f"RPC to node {target} timed out after {self.timeout:g}s"
            ) from None
        except aiohttp.ClientSSLError as exc:
            # A certificate that does not verify will not verify next time either.
            raise NetworkError(f"TLS with node {target} failed: {exc}", permanent=True) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise NetworkError(f"Cannot reach node {target} at {url.origin()}: {exc}") from exc
        if status != 200:
            raise status_error(target, status, answer)
        try:
            return codec.decode(response_cls, answer)
        except codec.CodecError as exc:
            raise NetworkError(
                f"Malformed {response_cls.__name__} from node {target}: {exc}", permanent=True
            ) from exc

    # -- server ---------------------------------------------------------------------------------

    def _make_route(self, cls: type[Any]) -> Callable[[web.Request], Awaitable[web.Response]]:
        method = HANDLER_OF[cls]

        async def route(request: web.Request) -> web.Response:
            return await self._serve(request, cls, method)

        return route

    async def _serve(self, request: web.Request, cls: type[Any], method: str) -> web.Response:
        expected = self._expected_auth
        if expected is not None:
            # Before the body is read: an unauthenticated peer must not make us buffer it.
            given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, expected):
                response = error_response(401, "missing or wrong cluster token", "unauthorized")
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        handlers = self._handlers
        if handlers is None:
            return error_response(503, str(no_handlers(self.node_id)), "no_handlers")
        try:
            body = await self._read_body(request)
        except _BodyTooLarge:
            limit = self.client_max_size
            return error_response(413, f"body larger than {limit} bytes", "too_large", limit=limit)
        try:
            req = codec.decode(cls, body)
        except codec.CodecError as exc:
            return error_response(
                400, f"invalid {cls.__name__}: {exc}", "bad_request", field=exc.field
            )
        try:
            response = await getattr(handlers, method)(req)
        except Exception as exc:
            logger.warning("%s: %s handler raised", self.node_id, cls.__name__, exc_info=True)
            return error_response(
                500, str(remote_handler_error(self.node_id, repr(exc))), "handler_error"
            )
        return web.Response(body=codec.encode(response), content_type=JSON)

    async def _read_body(self, request: web.Request) -> bytes:
        """The body, bounded by our own ``client_max_size`` (mounted apps have their own)."""
        limit = self.client_max_size
        length = request.content_length
        if length is not None and length > limit:
            raise _BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge
            chunks.append(chunk)
        # join() of a single chunk returns it without copying: the common small-body case.
        return b"".join(chunks)
