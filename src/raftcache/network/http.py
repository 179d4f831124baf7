"""HTTP transport on aiohttp (docs/network.md): JSON by default, msgpack and compression negotiated.

Rule: one ``POST`` per RPC carrying the message in a body format of ``httpwire`` (JSON unless
both sides know msgpack and the sender chose it); the routes, the error bodies and the mapping
of statuses back to the ``NetworkError`` family are the wire contract of ``httpwire``, the
serving half is ``httpserver.RaftRoutes``.

On the client: an unknown target id is permanent ("No address configured for node X");
connection refused or reset by a known peer is transient; a timeout is ``NetworkTimeoutError``;
a certificate that does not verify is permanent (misconfiguration).

Negotiation (per peer, learned from its 200 and 415 answers, which advertise ``Accept-Encoding``
and ``Accept-Post``): until a peer has answered, and for a peer that advertises nothing (an
older node), requests are plain JSON. A body of at least ``compression_threshold`` bytes is
compressed with the first of ``compression`` the peer accepts (in a worker thread: a 1 MiB chunk
takes milliseconds); msgpack is used when ``wire_format="msgpack"`` and the peer reads it. A 415
answer to a compressed body (the peer changed under us) makes the client learn and resend once.

Metrics: every call is recorded in ``metrics`` (``outbound``: count, latency, error kind, bytes
on the wire and before compression), and ``RaftRoutes`` records what this node serves.

Mounting: ``HttpNetwork(..., app=existing)`` or ``net.mount(existing)`` before the application
starts adds the three routes to an aiohttp application the caller serves (one port for Raft and
the client API); ``start()`` then opens no listener of its own, only the client session, and the
TLS files configure the client side only (the caller's server does TLS). Mounted routes enforce
``client_max_size`` themselves, whatever the application's own limit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from aiohttp import web
from yarl import URL

from raftcache.network import compression as codings
from raftcache.network.batching import outcome_of
from raftcache.network.codec import CodecError
from raftcache.network.errors import NetworkError, no_address
from raftcache.network.httpclient import (
    NOTHING,
    Answer,
    PeerCapabilities,
    resolve_client,
    transfer,
)
from raftcache.network.httpserver import RaftRoutes
from raftcache.network.httpwire import (
    CONTENT_TYPE_OF,
    DEFAULT_CLIENT_MAX_SIZE,
    FORMATS,
    PATHS,
    decode_body,
    encode_body,
    format_of,
    json_errors,
    status_error,
)
from raftcache.network.interface import NetworkInterface, RpcHandlers
from raftcache.network.listener import TCPSite
from raftcache.network.metrics import NetworkMetrics, rpc_name
from raftcache.network.tls import client_ssl_context, server_ssl_context
from raftcache.network.wrapper import Clock, loop_clock
from raftcache.protocol.messages import (
    DEFAULT_BATCH_HOLD,
    AppendEntriesBatch,
    AppendEntriesBatchResponse,
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    RequestVoteRequest,
    RequestVoteResponse,
)

if TYPE_CHECKING:
    from raftcache.network.lean_client import LeanClient

__all__ = ["HttpNetwork"]


Resp = TypeVar("Resp")

_INDEX = {cls: i for i, cls in enumerate(PATHS)}  # a request type's slot in a peer's URL tuple


class HttpNetwork(NetworkInterface):
    """Raft RPCs over HTTP, with keep-alive pooling, a cluster token, (m)TLS, negotiated
    compression and body format, and metrics.

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
        client_max_size: largest accepted request body (as decoded), in bytes.
        max_connections: keep-alive connections per peer host (each AppendEntries in flight
            holds one; a per-peer bound keeps a slow follower from queueing the heartbeats of
            the others behind its pipelined requests, as one shared pool did).
        keepalive_timeout: seconds an idle pooled connection is kept.
        shutdown_timeout: seconds ``stop()`` lets running handlers finish before cancelling them.
        app: an aiohttp application to mount the routes on instead of listening (see module).
        compression: content codings to compress large request bodies with, best first
            (``("zstd", "gzip")``); codings this process lacks are dropped. Empty: never.
        compression_threshold: smallest body, in bytes, that is compressed.
        compression_level: the codec's level (None: gzip 1, zstd 3: fast, most of the gain).
        wire_format: ``"json"`` (default) or ``"msgpack"`` (used with peers that read it).
        metrics: where calls are recorded (default: a new ``NetworkMetrics``, as ``.metrics``).
        clock: monotonic seconds for latencies and, in ``StreamNetwork``, the renegotiation
            window and the reconnect back-off (default: the running loop's time).
        client: what sends the RPCs: ``"lean"`` (``lean_client``: the same HTTP/1.1 wire on
            pooled asyncio connections parsed by httptools, less CPU), ``"aiohttp"``, or
            ``"auto"`` (lean when httptools is installed, else aiohttp).

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
        compression: Sequence[str] = (),
        compression_threshold: int = codings.DEFAULT_THRESHOLD,
        compression_level: int | None = None,
        wire_format: str = "json",
        metrics: NetworkMetrics | None = None,
        clock: Clock | None = None,
        client: str = "auto",
    ) -> None:
        self.client = resolve_client(client)
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
        self._configure_encoding(compression, compression_threshold, compression_level, wire_format)
        self.metrics = metrics if metrics is not None else NetworkMetrics()
        self._clock = clock or loop_clock
        self._addresses: dict[str, str] = {}
        self._urls: dict[str, tuple[URL, ...]] = {}
        self._peers: dict[str, PeerCapabilities] = {}
        for peer, url in node_addresses.items():
            self.set_peer_address(peer, url)
        auth = f"Bearer {cluster_token}" if cluster_token else None
        self._auth_header = {"Authorization": auth} if auth else {}
        self._server = RaftRoutes(
            node_id,
            auth=auth.encode() if auth else None,
            client_max_size=client_max_size,
            metrics=self.metrics,
            clock=self._clock,
        )
        self._server_ssl: ssl.SSLContext | None = None
        if ssl_certfile is not None and app is None:
            self._server_ssl = server_ssl_context(
                ssl_certfile, ssl_keyfile, ssl_cafile, require_client_cert=require_client_cert
            )
        # Without TLS files, https URLs use aiohttp's default context (the system trust store).
        self._client_ssl: ssl.SSLContext | bool = True
        if ssl_cafile is not None or ssl_certfile is not None:
            self._client_ssl = client_ssl_context(ssl_cafile, ssl_certfile, ssl_keyfile)
        self._session: aiohttp.ClientSession | None = None
        self._lean: LeanClient | None = None
        self._runner: web.AppRunner | None = None
        self._mounted = False
        if app is not None:
            self.mount(app)

    def _configure_encoding(
        self, names: Sequence[str], threshold: int, level: int | None, wire_format: str
    ) -> None:
        unknown = [n for n in names if n not in codings.KNOWN]
        if unknown or threshold < 0 or wire_format not in FORMATS:
            raise ValueError(
                f"compression must name {codings.KNOWN} (got {unknown}), "
                f"compression_threshold >= 0, wire_format one of {FORMATS}"
            )
        # Codings this process lacks are dropped, so one configuration fits every node.
        self.compression = tuple(n for n in names if n in codings.available())
        self.compression_threshold = threshold
        self.compression_level = level
        self.wire_format = wire_format

    # -- configuration --------------------------------------------------------------------------

    @property
    def node_addresses(self) -> dict[str, str]:
        """A copy of the current id → base URL map."""
        return dict(self._addresses)

    @property
    def started(self) -> bool:
        return self._session is not None

    @property
    def _handlers(self) -> RpcHandlers | None:
        return self._server.handlers

    def set_peer_address(self, node_id: str, address: str | None) -> None:
        """Add, change (``address``) or forget (``None``) a peer's base URL."""
        if address is not None and self._addresses.get(node_id) == address:
            return  # membership changes resend every address: keep what the peer told us
        # A new address may be a different node build: learn its capabilities afresh.
        self._peers.pop(node_id, None)
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

    def peer_capabilities(self, node_id: str) -> PeerCapabilities:
        """What ``node_id`` last said it reads (nothing but JSON until it has answered)."""
        return self._peers.get(node_id, NOTHING)

    def routes(self) -> list[web.RouteDef]:
        """The three ``POST /raft/...`` routes, for ``app.add_routes`` on any application."""
        return self._server.routes()

    def mount(self, app: web.Application) -> None:
        """Serve the Raft routes on ``app`` (before it starts); ``start()`` will not listen."""
        app.add_routes(self.routes())
        self._mounted = True

    # -- lifecycle ------------------------------------------------------------------------------

    def register_handlers(self, handlers: RpcHandlers) -> None:
        self._server.handlers = handlers

    async def start(self) -> None:
        """Open the client session and, unless mounted, the listener. Idempotent."""
        if self._session is not None:
            return
        if not self._mounted:
            await self._listen()
        connector = aiohttp.TCPConnector(
            limit=0,  # bounded per peer instead: the peers are few and known
            limit_per_host=self.max_connections,
            keepalive_timeout=self.keepalive_timeout,
            ssl=self._client_ssl,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            # Peers set no cookies; the dummy jar skips cookie filtering on every request.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        if self.client == "lean":  # the session stays: StreamNetwork opens its sockets with it
            from raftcache.network.lean_client import LeanClient

            self._lean = LeanClient(
                ssl_context=self._client_ssl,
                max_connections=self.max_connections,
                keepalive_timeout=self.keepalive_timeout,
            )

    async def _listen(self) -> None:
        app = web.Application(client_max_size=self.client_max_size, middlewares=[json_errors])
        app.add_routes(self.routes())
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self.shutdown_timeout,
            # We decode request bodies ourselves: every coding we have, bounded by our limit.
            auto_decompress=False,
        )
        await runner.setup()
        try:
            site = TCPSite(runner, self.host, self.port, ssl_context=self._server_ssl)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._server.standalone = True
        # Keep the port chosen for port=0: a restarted node must stay at the address peers know.
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Close the client session and the listener (in-flight handlers are cancelled)."""
        session, self._session = self._session, None
        runner, self._runner = self._runner, None
        lean, self._lean = self._lean, None
        if lean is not None:
            await lean.close()
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

    async def send_append_batch(
        self, target: str, reqs: Sequence[AppendEntriesRequest], *, hold: float = DEFAULT_BATCH_HOLD
    ) -> list[AppendEntriesResponse | Exception]:
        """One ``POST /raft/append-batch`` when ``target`` serves it, else one RPC each."""
        caps = self.peer_capabilities(target)
        if len(reqs) < 2 or not caps.batch:
            return await super().send_append_batch(target, reqs)
        try:
            answer = await HttpNetwork._post(
                self, target, AppendEntriesBatch(list(reqs), hold), AppendEntriesBatchResponse
            )
        except NetworkError as exc:
            if exc.kind not in ("not_found", "too_large"):
                raise
            # Nothing reached a handler: the items go again one by one. Not found: the peer was
            # replaced by a build without the route (it said it had one), and batches stop
            # until it says otherwise. Too large: the batch is over the peer's body limit,
            # which no item alone is (each fits a single RPC's limit, as it always did).
            if exc.kind == "not_found":
                self._peers[target] = dataclasses.replace(caps, batch=False)
            return await super().send_append_batch(target, reqs)
        if len(answer.items) != len(reqs):
            raise NetworkError(
                f"Malformed AppendEntriesBatchResponse from node {target}: "
                f"{len(answer.items)} answers to {len(reqs)} items",
                permanent=True,
            )
        return [outcome_of(item) for item in answer.items]

    async def _post(self, target: str, req: Any, response_cls: type[Resp]) -> Resp:
        urls = self._urls.get(target)
        if urls is None:
            raise no_address(target)
        rpc, url = rpc_name(req), urls[_INDEX[type(req)]]
        started = self._clock()
        try:
            answer = await self._exchange(target, url, req)
            if answer.status != 200:
                raise status_error(target, answer.status, answer.body)
            try:
                result: Resp = decode_body(
                    format_of(answer.content_type), response_cls, answer.body
                )
            except CodecError as exc:
                raise NetworkError(
                    f"Malformed {response_cls.__name__} from node {target}: {exc}", permanent=True
                ) from exc
        except NetworkError as exc:
            self.metrics.record("outbound", rpc, target, self._clock() - started, exc)
            raise
        self.metrics.record("outbound", rpc, target, self._clock() - started)
        return result

    async def _exchange(self, target: str, url: URL, req: Any) -> Answer:
        """Send ``req``, encoded as ``target`` reads it; resend once plainly after a 415."""
        caps = self.peer_capabilities(target)
        fmt = self.wire_format if self.wire_format in caps.formats else "json"
        body = encode_body(fmt, req)
        encoding = self._encoding_for(caps, len(body))
        answer = await self._send(target, url, req, body, fmt, encoding)
        if answer.status == 415 and encoding is not None:
            # The peer no longer reads that coding (it was replaced): learn, then resend as is.
            answer = await self._send(target, url, req, body, fmt, None)
        return answer

    def _encoding_for(self, caps: PeerCapabilities, size: int) -> str | None:
        if size < self.compression_threshold or not caps.encodings:
            return None
        return next((e for e in self.compression if e in caps.encodings), None)

    async def _send(
        self, target: str, url: URL, req: Any, body: bytes, fmt: str, encoding: str | None
    ) -> Answer:
        content_type = CONTENT_TYPE_OF[fmt]
        headers = {**self._auth_header, "Content-Type": content_type, "Accept": content_type}
        wire = body
        if encoding is not None:
            codec = codings.codec(encoding)
            # In a worker thread: zlib and zstd release the GIL, the event loop keeps serving.
            wire = await asyncio.to_thread(codec.compress, body, self.compression_level)
            headers["Content-Encoding"] = encoding
        session = self._session
        if session is None:
            raise NetworkError(f"HttpNetwork of node {self.node_id} is not started", permanent=True)
        lean = self._lean
        if lean is not None:
            answer = await lean.transfer(target, url, wire, headers, self.timeout)
        else:
            answer = await transfer(session, target, url, wire, headers, self.timeout)
        self.metrics.record_bytes(
            "outbound",
            rpc_name(req),
            target,
            sent=len(wire),
            body_sent=len(body),
            received=len(answer.body),
        )
        if answer.capabilities is not None:
            self._peers[target] = answer.capabilities
        return answer
