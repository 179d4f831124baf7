"""``NodeServer``: one running node — its Raft node and cache service behind one HTTP port.

Rule: the server listens before the node campaigns (peers can reach it at once) and owns the
shutdown order (SIGTERM/SIGINT): the node first declines to become a transfer target (a leader
stopping at the same time would otherwise hand leadership to it), a leader then hands
leadership to its most up-to-date live follower (``server.handover``, bounded; on by default,
``--no-transfer-on-shutdown`` turns it off), then the node stops accepting connections, lets
in-flight requests finish (``server.drain``, bounded by ``shutdown_timeout_s``; the node still
runs so they can commit, or be forwarded to the new leader), stops the cache service's
background work, stops the node (which persists and stops the network), closes storage. What
runs behind the front is started, handed over and stopped through five hooks, which
``StoreServer`` (many groups) overrides.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from raftcache.cache.service import CacheService
from raftcache.network.listener import TCPSite
from raftcache.raft.node import RaftNode
from raftcache.server.drain import DRAIN
from raftcache.server.handover import HANDOVER, Handover, hand_over, handover_middleware
from raftcache.server.lean.front import LeanFront, LeanSite, lean_available

log = logging.getLogger("raftcache.server")

#: Longest request line and header field the HTTP parser reads (aiohttp's default is 8190).
MAX_REQUEST_LINE_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Listener:
    """Where a ``FrontServer`` listens and how it stops, as ``serve``'s options say.

    Attributes:
        host: address to listen on.
        port: port to listen on (0: a free port, read ``.port`` after ``start()``).
        ssl_context: server TLS context, or None for plain HTTP.
        shutdown_timeout_s: bound on waiting for in-flight requests at shutdown.
        transfer_on_shutdown: a leader hands leadership over before it stops (see
            ``server.handover``; bounded by two election timeouts and ``shutdown_timeout_s``).
        http_front: ``lean`` (``server.lean.front``: httptools answers the hot key and Raft
            routes), ``aiohttp`` (aiohttp alone) or ``auto`` (lean when httptools is
            installed); ``lean-keys``, for A/B measurements: lean, but the Raft routes are
            served by aiohttp.
        clock: wall-clock seconds since the epoch, for the lean front's ``Date``.
    """

    host: str
    port: int
    ssl_context: ssl.SSLContext | None = None
    shutdown_timeout_s: float = 10.0
    transfer_on_shutdown: bool = True
    http_front: str = "auto"
    clock: Callable[[], float] = time.time


class FrontServer(abc.ABC):
    """The HTTP server on one port in front of what it serves (a node, or a store of many
    groups): listening, the lean or aiohttp front, the graceful stop. What runs behind it is
    started, handed over, waited on and stopped through the hooks below.

    Args:
        app: the aiohttp application.
        label: the id its log lines carry (the node's or the store's).
        listener: where it listens and how it stops (``Listener``).
    """

    def __init__(self, app: web.Application, *, label: str, listener: Listener) -> None:
        self.label = label
        self.app = app
        self.host = listener.host
        self.port = listener.port
        self._ssl_context = listener.ssl_context
        shutdown_timeout_s = listener.shutdown_timeout_s
        http_front = listener.http_front
        self._shutdown_timeout_s = shutdown_timeout_s
        self._transfer_on_shutdown = listener.transfer_on_shutdown
        self._handover = Handover()
        app[HANDOVER] = self._handover
        # Innermost, inside forwarding: requests caught by the hand-over go to the new leader.
        app.middlewares.append(handover_middleware)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=shutdown_timeout_s,
            # Room for the longest request the API accepts (a listing with a 1 KiB prefix and
            # after, percent-encoded), so the app — not the HTTP parser — judges it, and answers
            # JSON. Beyond these, aiohttp's parser refuses with a plain-text 400.
            max_line_size=MAX_REQUEST_LINE_BYTES,
            max_field_size=MAX_HEADER_BYTES,
            # Request bodies reach the handlers as sent: the Raft routes decode their codings
            # themselves, bounded by their size limit (aiohttp would inflate a small gzip body
            # to any size, and answers codings it lacks with a plain-text 400); the client API
            # refuses content codings (415).
            auto_decompress=False,
        )
        self._started = False
        self._lean = _lean_wanted(http_front)
        self._lean_raft = http_front != "lean-keys"
        self._lean_site: LeanSite | None = None
        self._clock = listener.clock

    @property
    def url(self) -> str:
        """The node's base URL as seen on loopback/its listen address."""
        scheme = "https" if self._ssl_context is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    async def start(self) -> None:
        """Listen first (peers can reach us as soon as the node campaigns), then start the
        node and the service's leader-only background work."""
        await self._runner.setup()
        site: TCPSite
        if self._lean:
            site = self._lean_site = LeanSite(
                self._runner,
                self.host,
                self.port,
                ssl_context=self._ssl_context,
                max_line_bytes=MAX_REQUEST_LINE_BYTES,
                max_field_bytes=MAX_HEADER_BYTES,
                raft=self._lean_raft,
                clock=self._clock,
            )
        else:
            site = TCPSite(self._runner, self.host, self.port, ssl_context=self._ssl_context)
        try:
            await site.start()
            self.port = self._runner.addresses[0][1]
            await self._start_replicas()
        except BaseException:
            await self._runner.cleanup()
            await self._abort_replicas()
            raise
        self._started = True
        # What serves: the front and the event loop (uvloop, or asyncio's own when uvloop is
        # missing), so an install that fell back to the slow path says so.
        loop = type(asyncio.get_running_loop()).__module__.partition(".")[0]
        log.info(
            "node serving",
            extra={"id": self.label, "url": self.url, "http_front": self.http_front, "loop": loop},
        )

    @abc.abstractmethod
    async def _start_replicas(self) -> None:
        """Start what serves behind the front."""

    @abc.abstractmethod
    async def _abort_replicas(self) -> None:
        """Undo a start that failed part-way."""

    @abc.abstractmethod
    async def _stop_replicas(self) -> None:
        """Stop what serves behind the front."""

    @abc.abstractmethod
    def prepare_to_stop(self) -> None:
        """Decline leadership transfers from now on (``RaftNode.prepare_to_stop``): the
        stop has begun. Idempotent; ``stop`` calls it first, a caller that has other work to
        do before ``stop`` calls it earlier."""

    @abc.abstractmethod
    async def _hand_over(self) -> None:
        """Hand leadership over before the listener closes (see ``server.handover``)."""

    @abc.abstractmethod
    async def wait_failed(self) -> BaseException:
        """Wait until what serves fail-stops (a failed fsync); what failed it."""

    def _election_timeout_max(self) -> float:
        return 2.0

    async def stop(self) -> None:
        """Graceful stop (see module docstring). Idempotent."""
        if not self._started:
            return
        self._started = False
        log.info("node stopping", extra={"id": self.label})
        # First of all, before anything awaits: when every node stops at once, a leader must
        # not hand leadership to this one (it would campaign, win, and stop).
        self.prepare_to_stop()
        if self._transfer_on_shutdown:
            # Before closing the listener: clients that know this node as the leader are then
            # served through it (held, then forwarded) rather than refused during the change.
            await self._hand_over()
        # Close the listener, then drain the connections we have (see ``server.drain``): aiohttp's
        # own shutdown would drop a request whose body is still arriving.
        for site in list(self._runner.sites):
            await site.stop()
        if not await self.app[DRAIN].wait_idle(self._shutdown_timeout_s):
            log.warning("requests still in progress at the shutdown timeout")
        if self.lean_front is not None:
            self.lean_front.close_connections()  # the runner closes aiohttp's below
        # Closes the now idle connections, runs on_cleanup.
        await self._runner.cleanup()
        await self._stop_replicas()
        log.info("node stopped", extra={"id": self.label})

    @property
    def lean_front(self) -> LeanFront | None:
        """The lean front serving this node (None on aiohttp alone or before ``start``)."""
        return self._lean_site.front if self._lean_site is not None else None

    @property
    def http_front(self) -> str:
        """``lean`` or ``aiohttp``: the front this node serves with."""
        return "lean" if self._lean else "aiohttp"

    def _transfer_timeout_s(self) -> float:
        # The core gives a transfer one election timeout; a second one covers the target's
        # own election. Never longer than the whole shutdown may take.
        return min(self._shutdown_timeout_s, 2 * self._election_timeout_max())


class NodeServer(FrontServer):
    """One running node: its Raft node, cache service and HTTP server on one port.

    Also the way to embed a node in an existing asyncio program: build the parts, then
    ``await server.start()`` and later ``await server.stop()``.

    Args:
        node: the Raft node (not started yet).
        service: the cache service over ``node`` (not started yet).
        app: the aiohttp application serving the node (``create_app``).
        host, port, ssl_context, shutdown_timeout_s, transfer_on_shutdown, http_front, clock:
            as for ``FrontServer``.
    """

    def __init__(
        self, node: RaftNode, service: CacheService, app: web.Application, listener: Listener
    ) -> None:
        super().__init__(app, label=node.node_id, listener=listener)
        self.node = node
        self.service = service

    async def _start_replicas(self) -> None:
        await self.node.start()
        await self.service.start()

    async def _abort_replicas(self) -> None:
        await self.node.stop()
        self.node.storage.close()  # idempotent; a node that never started did not close it

    async def _stop_replicas(self) -> None:
        # The service's background work first, then the node (network and storage with it).
        with contextlib.suppress(Exception):
            await self.service.stop()
        await self.node.stop()

    def prepare_to_stop(self) -> None:
        self.node.prepare_to_stop()

    async def _hand_over(self) -> None:
        await hand_over(self.node, self._handover, self._transfer_timeout_s())

    async def wait_failed(self) -> BaseException:
        return await self.node.wait_failed()

    def _election_timeout_max(self) -> float:
        return float(getattr(self.node.config, "election_timeout_max", 2.0))


def _lean_wanted(http_front: str) -> bool:
    if http_front == "aiohttp":
        return False
    if http_front in ("lean", "lean-keys") and not lean_available():
        raise RuntimeError(
            "--http-front lean needs httptools, a dependency of raftcache that is missing "
            "here: pip install httptools"
        )
    return lean_available()
