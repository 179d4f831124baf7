"""An in-process fake of the HTTP API (docs/api.md) with scripted faults, for client tests.

Rule: the fake is a dict behind real HTTP (aiohttp on loopback), shared by several "nodes" so the
client sees a cluster: any node serves any request, as a follower forwarding to the leader would.
It keeps a last-seq-only session table per client id — the strictest table a server may keep — so
a test can check that retries are answered, not re-applied. Faults are queued ``Fault`` objects
that the next matching request consumes; every request is recorded for assertions.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Fault:
    """Answer the next matching request with ``status`` instead of serving it.

    ``apply_first`` serves the request (so a write takes effect) and then answers ``status``:
    the lost-reply case that makes a write indeterminate. ``hang_s`` delays the answer (after
    applying, with ``apply_first``).
    """

    status: int = 503
    node: str | None = None
    method: str | None = None
    path_prefix: str = "/v1/keys"
    retry_after: str | None = None
    apply_first: bool = False
    hang_s: float = 0.0
    body: dict[str, Any] | None = None


@dataclass
class Recorded:
    node: str
    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeCluster:
    """The shared state of the fake nodes."""

    node_ids: list[str] = field(default_factory=lambda: ["n1", "n2", "n3"])
    leader: str | None = "n1"
    term: int = 2
    store: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    index: int = 10
    sessions: dict[str, tuple[int, web.Response]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    urls: dict[str, str] = field(default_factory=dict)
    ssl_context: ssl.SSLContext | None = None
    runners: list[web.AppRunner] = field(default_factory=list)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        for node in self.node_ids:
            app = web.Application()
            _routes(app, self, node)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
            await site.start()
            port = runner.addresses[0][1]
            scheme = "https" if self.ssl_context is not None else "http"
            self.urls[node] = f"{scheme}://127.0.0.1:{port}"
            self.runners.append(runner)

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()
        self.runners.clear()

    def endpoints(self) -> list[str]:
        return [self.urls[n] for n in self.node_ids]

    def key_requests(self) -> list[Recorded]:
        return [r for r in self.requests if not r.raw_path.startswith("/v1/status")]

    # -------------------------------------------------------------- serving

    def take_fault(self, node: str, request: web.Request) -> Fault | None:
        for i, fault in enumerate(self.faults):
            if fault.node not in (None, node) or fault.method not in (None, request.method):
                continue
            if request.raw_path.startswith(fault.path_prefix):
                return self.faults.pop(i)
        return None

    def commit(self) -> int:
        self.index += 1
        self.applied += 1
        return self.index


def _json(status: int, body: dict[str, Any], **headers: str) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def _routes(app: web.Application, cluster: FakeCluster, node: str) -> None:
    @web.middleware
    async def faults_and_sessions(request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        cluster.requests.append(
            Recorded(node, request.method, request.raw_path, dict(request.headers), body)
        )
        fault = cluster.take_fault(node, request)
        if fault is None:
            return await _with_session(cluster, request, handler)
        if fault.apply_first:
            await _with_session(cluster, request, handler)
        await asyncio.sleep(fault.hang_s)
        return _fault_response(fault)

    app.middlewares.append(faults_and_sessions)
    handlers = _Handlers(cluster, node)
    app.router.add_get("/v1/status", handlers.status)
    app.router.add_get("/v1/stats", handlers.stats)
    app.router.add_get("/v1/keys", handlers.list_keys)
    app.router.add_get("/v1/keys/{key}", handlers.get)
    app.router.add_put("/v1/keys/{key}", handlers.put)
    app.router.add_delete("/v1/keys/{key}", handlers.delete)
    app.router.add_post("/v1/keys/{key}/incr", handlers.incr)
    app.router.add_post("/v1/mget", handlers.mget)
    app.router.add_post("/v1/batch", handlers.batch)


def _fault_response(fault: Fault) -> web.Response:
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
    body = fault.body or {"error": f"injected {fault.status}"}
    if fault.status == 504:
        body = {**body, "indeterminate": True}
    return _json(fault.status, body, **headers)


async def _with_session(cluster: FakeCluster, request: web.Request, handler: Any) -> web.Response:
    """Answer a duplicate (client id, seq) from the session table instead of applying it."""
    client_id = request.headers.get("X-Raftcache-Client-Id")
    seq_text = request.headers.get("X-Raftcache-Seq")
    if client_id is None or seq_text is None:
        response: web.Response = await handler(request)
        return response
    seq = int(seq_text)
    last = cluster.sessions.get(client_id)
    if last is not None and seq == last[0]:
        cluster.duplicates += 1
        cached = last[1]
        return web.Response(
            body=cached.body, status=cached.status, content_type=cached.content_type
        )
    if last is not None and seq < last[0]:
        return _json(400, {"error": f"stale sequence number {seq} < {last[0]}"})
    response = await handler(request)
    cluster.sessions[client_id] = (seq, response)
    return response


@dataclass
class _Handlers:
    cluster: FakeCluster
    node: str

    async def status(self, request: web.Request) -> web.Response:
        c = self.cluster
        role = "leader" if c.leader == self.node else "follower"
        return _json(
            200,
            {
                "id": self.node,
                "role": role,
                "term": c.term,
                "leader": c.leader,
                "commit_index": c.index,
                "last_applied": c.index,
                "members": c.node_ids,
            },
        )

    async def stats(self, request: web.Request) -> web.Response:
        keys = len(self.cluster.store)
        raft = {"elections": 1, "state_transitions": 3, "rpcs_sent": {}, "rpcs_received": {}}
        raft |= {"replication_latency_ms": {}, "follower_lag": {}}
        return _json(200, {"cache": {"keys": keys, "hits": 0, "misses": 0}, "raft": raft})

    async def get(self, request: web.Request) -> web.Response:
        found = self.cluster.store.get(request.match_info["key"])
        if found is None:
            return _json(404, {"error": "not found"})
        return web.Response(body=found[0], headers={"ETag": f'"{found[1]}"'})

    async def put(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        current = self.cluster.store.get(key)
        failed = _precondition(request, current)
        if failed is not None:
            return failed
        if "ttl" in request.query and float(request.query["ttl"]) <= 0:
            return _json(400, {"error": "bad ttl"})
        version = self.cluster.commit()
        self.cluster.store[key] = (await request.read(), version)
        return _json(200, {"version": version})

    async def delete(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        current = self.cluster.store.get(key)
        failed = _precondition(request, current)
        if failed is not None:
            return failed
        self.cluster.commit()
        return _json(200, {"deleted": self.cluster.store.pop(key, None) is not None})

    async def incr(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        by = (await request.json()).get("by", 1)
        current = self.cluster.store.get(key, (b"0", 0))[0]
        if not current.lstrip(b"-").isdigit():
            return _json(409, {"error": "not a counter"})
        value = int(current) + by
        version = self.cluster.commit()
        self.cluster.store[key] = (str(value).encode(), version)
        return _json(200, {"value": value, "version": version})

    async def list_keys(self, request: web.Request) -> web.Response:
        prefix = request.query.get("prefix", "")
        after = request.query.get("after")
        limit = int(request.query.get("limit", "1000"))
        keys = sorted(k for k in self.cluster.store if k.startswith(prefix))
        if after is not None:
            keys = [k for k in keys if k > after]
        page = keys[:limit]
        nxt = page[-1] if len(keys) > limit else None
        return _json(200, {"keys": page, "next": nxt})

    async def mget(self, request: web.Request) -> web.Response:
        keys = (await request.json())["keys"]
        values = [_b64(self.cluster.store.get(k)) for k in keys]
        return _json(200, {"values": values})

    async def batch(self, request: web.Request) -> web.Response:
        results: list[dict[str, Any]] = []
        version = self.cluster.commit()
        for op in (await request.json())["ops"]:
            key = op["key"]
            if op["op"] == "get":
                results.append({"value": _b64(self.cluster.store.get(key))})
            elif op["op"] == "set":
                self.cluster.store[key] = (base64.b64decode(op["value"]), version)
                results.append({"version": version})
            else:
                results.append({"deleted": self.cluster.store.pop(key, None) is not None})
        return _json(200, {"results": results})


def _b64(found: tuple[bytes, int] | None) -> str | None:
    return None if found is None else base64.b64encode(found[0]).decode()


def _precondition(request: web.Request, current: tuple[bytes, int] | None) -> web.Response | None:
    version = None if current is None else current[1]
    if_match = request.headers.get("If-Match")
    if if_match is not None and (version is None or if_match != f'"{version}"'):
        return _json(412, {"error": "version mismatch", "version": version})
    if request.headers.get("If-None-Match") == "*" and current is not None:
        return _json(412, {"error": "exists", "version": version})
    return None


class FakeTime:
    """A clock that only moves when the client sleeps: back-off schedules run instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def closed_port_url() -> str:
    """A loopback URL on which nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextmanager
def threaded_cluster(**kwargs: Any) -> Iterator[FakeCluster]:
    """Run a ``FakeCluster`` on a background event-loop thread, for synchronous tests."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    cluster = FakeCluster(**kwargs)
    asyncio.run_coroutine_threadsafe(cluster.start(), loop).result(10)
    try:
        yield cluster
    finally:
        asyncio.run_coroutine_threadsafe(cluster.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
