"""Overload: a cluster of three real ``raftcache serve`` processes offered twice the write rate
it sustains (the load generator runs in the test's process, so it does not compete with the
nodes for their event loops).

Measured, then asserted only as correctness: every answer is 200, a 503 with Retry-After (shed
load: nothing happened) or a 504 marked indeterminate; no request goes unanswered; no node
stops; the health endpoint answers throughout; every acknowledged write is there afterwards;
and once the load drops the cluster serves every request again. Rates and latencies are printed
(``pytest -s``), never asserted: timing belongs in benchmarks.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
import pytest

from .procs import Node, Procs

pytestmark = pytest.mark.e2e

WORKERS = 16
PHASE_S = 1.5
OVERLOAD_S = 3.0
REQUEST_TIMEOUT_S = 20.0
VALUE = b"v" * 100


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    acked: dict[str, bytes] = field(default_factory=dict)
    bad: list[tuple[int, bytes]] = field(default_factory=list)
    unanswered: int = 0
    shed: int = 0  # 503s of admission control (``overloaded``), among the 503s
    shed_latencies: list[float] = field(default_factory=list)

    def rate(self, seconds: float) -> float:
        return self.statuses[200] / seconds

    def summary(self) -> str:
        text = f"{dict(self.statuses)}, accepted in {percentiles(self.latencies)}"
        if self.shed:
            text += f"; {self.shed} shed in {percentiles(self.shed_latencies)}"
        return text


def percentiles(latencies: list[float]) -> str:
    lat = sorted(latencies) or [0.0]
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return (
        f"p50 {statistics.median(lat) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {lat[-1] * 1000:.1f} ms"
    )


def shed_or_indeterminate(status: int, headers: Mapping[str, str], body: bytes) -> bool:
    """A 503 with Retry-After (nothing happened), or a 504 marked indeterminate."""
    if status == 503:
        return headers.get("Retry-After", "").isdigit()
    return status == 504 and orjson.loads(body).get("indeterminate") is True


async def put(session: aiohttp.ClientSession, url: str, key: str, tally: Tally) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with session.put(f"{url}/v1/keys/{key}", data=VALUE) as resp:
            body = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError):
        tally.unanswered += 1
        return
    tally.statuses[status] += 1
    if status == 200:
        tally.acked[key] = VALUE
        tally.latencies.append(loop.time() - started)
    elif not shed_or_indeterminate(status, resp.headers, body):
        tally.bad.append((status, body[:200]))
    elif status == 503 and orjson.loads(body).get("overloaded") is True:
        tally.shed += 1
        tally.shed_latencies.append(loop.time() - started)


async def closed_loop(session: aiohttp.ClientSession, url: str, name: str) -> Tally:
    """WORKERS clients, each sending its next write when the last one is answered."""
    tally = Tally()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PHASE_S

    async def worker(w: int) -> None:
        i = 0
        while loop.time() < deadline:
            await put(session, url, f"{name}-{w}-{i}", tally)
            i += 1

    await asyncio.gather(*(worker(w) for w in range(WORKERS)))
    return tally


async def open_loop(session: aiohttp.ClientSession, url: str, rate: float) -> tuple[Tally, float]:
    """Writes sent at ``rate`` per second whatever happens to earlier ones (as real clients
    do); returns the tally and the rate actually offered."""
    tally = Tally()
    loop = asyncio.get_running_loop()
    started = loop.time()
    tasks: list[asyncio.Task[None]] = []
    while (now := loop.time()) < started + OVERLOAD_S:
        due = int((now - started) * rate) + 1
        while len(tasks) < due:
            tasks.append(asyncio.create_task(put(session, url, f"over-{len(tasks)}", tally)))
        await asyncio.sleep(0.002)
    offered = len(tasks) / OVERLOAD_S
    await asyncio.gather(*tasks)
    return tally, offered


async def probe(
    session: aiohttp.ClientSession, url: str, stop: asyncio.Event
) -> list[tuple[int, float]]:
    """Health checks every 50 ms while the load runs: (status, latency) of each. A 503 ("no
    leader known") is an answer too: a leader change under load is allowed, silence is not."""
    loop = asyncio.get_running_loop()
    answers = []
    while not stop.is_set():
        started = loop.time()
        async with session.get(url + "/v1/health") as resp:
            assert resp.status in (200, 503), await resp.text()
            assert "error" in (await resp.json()) or resp.status == 200
        answers.append((resp.status, loop.time() - started))
        await asyncio.sleep(0.05)
    return answers


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[list[Node]]:
    procs = Procs(tmp_path)
    started = [procs.add(f"n{i}") for i in (1, 2, 3)]
    limits = ("--max-inflight-requests", "64", "--max-pending-writes", "48")
    for node in started:
        procs.start(node, started, *limits)
    try:
        yield started
    finally:
        procs.stop_all()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0)  # the client must not queue for the server
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        yield client


async def test_twice_the_sustainable_rate(
    nodes: list[Node], session: aiohttp.ClientSession
) -> None:
    leader_id = await find_leader(session, nodes)
    leader = next(n for n in nodes if n.node_id == leader_id)
    follower = next(n for n in nodes if n is not leader)

    before = await closed_loop(session, leader.url, "before")
    sustainable = before.rate(PHASE_S)
    assert sustainable > 0, before.summary()

    stop = asyncio.Event()
    probes = [asyncio.create_task(probe(session, s.url, stop)) for s in (leader, follower)]
    histogram_before = await put_histogram(session, leader.url)
    overload, offered = await open_loop(session, leader.url, 2 * sustainable)
    served = histogram_delta(histogram_before, await put_histogram(session, leader.url))
    stop.set()
    answers = [answer for probed in await asyncio.gather(*probes) for answer in probed]
    health = [latency for _, latency in answers]
    leaderless = sum(1 for status, _ in answers if status == 503)

    after = await closed_loop(session, leader.url, "after")

    print(
        f"\nsustainable {sustainable:.0f} writes/s ({before.summary()})"
        f"\noffered {offered:.0f}/s for {OVERLOAD_S:g} s: accepted "
        f"{overload.rate(OVERLOAD_S):.0f}/s, {overload.summary()}"
        f"\n  as the leader saw them (from its /metrics): {served}"
        f"\nhealth during overload: {len(health)} probes ({leaderless} while no leader was "
        f"known), p50 {statistics.median(health) * 1000:.1f} ms, max {max(health) * 1000:.1f} ms"
        f"\nafter the load dropped: {after.rate(PHASE_S):.0f} writes/s ({after.summary()})"
    )
    for tally in (before, overload, after):
        assert tally.bad == []
        assert tally.unanswered == 0
    assert overload.statuses[200] > 0
    assert overload.shed > 0  # the bounds were reached, and load was shed rather than queued
    # Recovered: at the sustainable concurrency again, nothing is shed and writes go through
    # (a 503 for a leader change on a busy machine is allowed, admission refusals are not).
    assert after.shed == 0, after.summary()
    assert after.statuses[200] > 0, after.summary()
    for node in nodes:
        assert node.alive(), node.log.read_text()[-2000:]
    await check_acknowledged(session, leader.url, {**before.acked, **overload.acked})


async def put_histogram(session: aiohttp.ClientSession, url: str) -> dict[float, float]:
    """The leader's own latency histogram of ``PUT /v1/keys/{key}``: upper bound → count."""
    async with session.get(url + "/metrics") as resp:
        text = await resp.text()
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith("raftcache_http_request_duration_seconds_bucket{") and (
            'route="/v1/keys/{key}"' in line and 'method="PUT"' in line
        ):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def histogram_delta(before: dict[float, float], after: dict[float, float]) -> str:
    """p50/p99 upper bounds of the requests served between two scrapes (refusals are not in
    the histogram: they are answered before any work)."""
    counts = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    total = counts.get(float("inf"), 0.0)
    if total == 0:
        return "no request"

    def quantile(q: float) -> str:
        bound = next(b for b, c in counts.items() if c >= q * total)
        return "> 10 s" if bound == float("inf") else f"≤ {bound * 1000:g} ms"

    return f"{total:.0f} admitted writes, p50 {quantile(0.5)}, p99 {quantile(0.99)}"


async def find_leader(session: aiohttp.ClientSession, nodes: list[Node]) -> str:
    """The leader every node agrees on (waits for the first election)."""
    async with asyncio.timeout(30):
        while True:
            leaders = set()
            for node in nodes:
                try:
                    async with session.get(node.url + "/v1/status") as resp:
                        leaders.add((await resp.json())["leader"])
                except aiohttp.ClientError:
                    leaders.add(None)
            if len(leaders) == 1 and None not in leaders:
                return str(leaders.pop())
            await asyncio.sleep(0.1)


async def check_acknowledged(
    session: aiohttp.ClientSession, url: str, acked: dict[str, bytes]
) -> None:
    """Every acknowledged write reads back (linearizable mget, 1000 keys at a time)."""
    keys = sorted(acked)
    for i in range(0, len(keys), 1000):
        chunk = keys[i : i + 1000]
        async with session.post(url + "/v1/mget", json={"keys": chunk}) as resp:
            assert resp.status == 200, await resp.text()
            values = (await resp.json())["values"]
        missing = [k for k, v in zip(chunk, values, strict=True) if v is None]
        assert missing == [], f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
