"""End to end: SIGTERM to the leader while clients are writing is a graceful stop.

What graceful means (docs/api.md): the node stops accepting connections, lets the
requests it is already handling finish (it keeps its Raft node running meanwhile, so they can
commit), persists, and exits 0. Seen from outside:

- ``raftcache.AsyncClient`` users see no error at all: a refused connection moves on to another
  node, and a write retried there keeps its session number, so it is applied once;
- a raw HTTP request either gets a complete answer — 200, or a clean 503 with ``Retry-After`` /
  504 ``indeterminate`` — or fails to connect; a request already in flight when the signal
  arrived is answered: one PUT is made in flight for certain by holding back the end of its
  body until the node has logged the signal, and it must get its 200;
- every write acknowledged either way is in the cluster afterwards.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from raftcache import AsyncClient, RaftcacheError
from tests.e2e.nodes import ProcessCluster, key_url, mget, wait_for, wait_for_leader

pytestmark = pytest.mark.e2e

CLIENTS = 4
RAW_SENDERS = 6


@dataclass
class RawResult:
    key: str
    value: bytes
    sent_s: float
    done_s: float
    status: int | None  # None: no HTTP answer (the error says why)
    body: bytes = b""
    retry_after: str | None = None
    error: BaseException | None = None


async def _raw_sender(url: str, sender: int, stop: asyncio.Event, out: list[RawResult]) -> None:
    """PUTs straight to one node, each on a fresh connection, until it refuses connections.

    Fresh connections: a keep-alive connection the server closes while idle would make a
    request fail without telling whether the server ever saw it.
    """
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        seq = 0
        while True:
            seq += 1
            key, value = f"raw/{sender}/{seq:04d}", f"{sender}:{seq}".encode()
            headers = {"X-Raftcache-Client-Id": f"raw-{sender}", "X-Raftcache-Seq": str(seq)}
            sent = time.monotonic()
            try:
                async with http.put(key_url(url, key), data=value, headers=headers) as resp:
                    body = await resp.read()
                    out.append(
                        RawResult(
                            key,
                            value,
                            sent,
                            time.monotonic(),
                            resp.status,
                            body,
                            resp.headers.get("Retry-After"),
                        )
                    )
            except aiohttp.ClientConnectorError as exc:  # refused: the listener is closed
                out.append(RawResult(key, value, sent, time.monotonic(), None, error=exc))
                if stop.is_set():
                    return
                await asyncio.sleep(0.05)
            except aiohttp.ClientError as exc:
                out.append(RawResult(key, value, sent, time.monotonic(), None, error=exc))


async def _client_writer(
    client: AsyncClient, writer: int, acked: dict[str, bytes], errors: list[BaseException]
) -> None:
    for i in range(30):
        key, value = f"grace/{writer}/{i:03d}", f"{writer}:{i}".encode()
        try:
            await client.set(key, value)
        except RaftcacheError as exc:
            errors.append(exc)
        else:
            acked[key] = value


def _check_raw_answers(results: list[RawResult]) -> dict[str, bytes]:
    """Raw answers are complete and clean; returns the writes they acknowledged."""
    acked: dict[str, bytes] = {}
    for r in results:
        if r.status is None:
            # Only a refused connection is a clean "not handled"; anything else (a reset or a
            # disconnect mid-request) would mean an accepted request was dropped.
            assert isinstance(r.error, aiohttp.ClientConnectorError), (r.key, repr(r.error))
        elif r.status == 200:
            acked[r.key] = r.value
        elif r.status == 503:
            assert r.retry_after is not None, r
            assert r.retry_after.isdigit(), r
        else:
            assert r.status == 504, r
            assert b'"indeterminate":true' in r.body.replace(b" ", b""), r
    return acked


async def _held_put(
    http: aiohttp.ClientSession, url: str, key: str, value: bytes, release: asyncio.Event
) -> RawResult:
    """A PUT whose last body byte waits for ``release``: in flight for as long as we like."""

    async def body() -> AsyncIterator[bytes]:
        yield value[:1]
        await release.wait()
        yield value[1:]

    sent = time.monotonic()
    headers = {"Content-Length": str(len(value))}
    async with http.put(key_url(url, key), data=body(), headers=headers) as resp:
        answer = await resp.read()
        return RawResult(key, value, sent, time.monotonic(), resp.status, answer)


async def _logged(cluster: ProcessCluster, node_id: str, text: str) -> None:
    node = cluster.nodes[node_id]

    async def seen() -> bool | None:
        return True if text in node.log_path.read_text() else None

    await wait_for(seen, f"{node_id} logs {text!r}", cluster=cluster)


async def test_sigterm_to_the_leader_finishes_in_flight_requests(tmp_path: Path) -> None:
    with ProcessCluster(tmp_path) as cluster:
        cluster.start_all()
        async with aiohttp.ClientSession() as http:
            leader = await wait_for_leader(cluster, http)
            acked: dict[str, bytes] = {}
            errors: list[BaseException] = []
            raw: list[RawResult] = []
            stop_raw = asyncio.Event()
            clients = [AsyncClient(cluster.endpoints, timeout=30) for _ in range(CLIENTS)]
            try:
                senders = [
                    asyncio.ensure_future(_raw_sender(leader.url, i, stop_raw, raw))
                    for i in range(RAW_SENDERS)
                ]
                writers = [
                    asyncio.ensure_future(_client_writer(c, i, acked, errors))
                    for i, c in enumerate(clients)
                ]

                async def warmed_up() -> bool | None:
                    answered = sum(r.status == 200 for r in raw)
                    return True if len(acked) >= 20 and answered >= 20 else None

                await wait_for(warmed_up, "writes flowing", cluster=cluster)
                release = asyncio.Event()
                held_value = b"held-in-flight"
                held = asyncio.ensure_future(
                    _held_put(http, leader.url, "held/0", held_value, release)
                )
                await asyncio.sleep(0.2)  # the request line and headers reach the node
                signalled_s = time.monotonic()
                cluster.send_signal(leader.node_id, signal.SIGTERM)
                stop_raw.set()
                await _logged(cluster, leader.node_id, "shutdown requested")
                release.set()
                held_result = await held
                code = await cluster.wait_exit(leader.node_id)
                async with asyncio.timeout(60):
                    await asyncio.gather(*senders)
                    await asyncio.gather(*writers)
            finally:
                for c in clients:
                    await c.close()

            assert code == 0, cluster.logs()
            log_text = leader.log_path.read_text()
            assert "shutdown requested" in log_text, log_text
            assert "node stopped" in log_text, log_text
            assert errors == [], f"clients saw errors: {errors}\n{cluster.logs()}"
            raw_acked = _check_raw_answers(raw)
            # The request held in flight across the signal was served to the end.
            assert held_result.sent_s < signalled_s < held_result.done_s
            assert held_result.status == 200, held_result
            raw_acked[held_result.key] = held_value

            # Every acknowledged write, from the clients and from raw requests, is there.
            new_leader = await wait_for_leader(cluster, http)
            assert new_leader is not leader
            everything = {**acked, **raw_acked}
            keys = sorted(everything)
            values = await mget(http, new_leader.url, keys)
            got = [None if v is None else base64.b64decode(v) for v in values]
            assert got == [everything[k] for k in keys]
