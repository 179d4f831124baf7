"""``/metrics`` counts watches: streams open and opened, events sent, 410s and 503s, and the
history's sizes — read from the node's ``WatchHub`` and ``WatchHistory`` at scrape time."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from raftcache.cache.watch import WatchHistory
from raftcache.server.routes_watch import WatchSettings

from .test_watch_routes import Factory, make, messages

__all__ = ["make"]  # the fixture, shared with the route tests


async def scrape(client: TestClient[web.Request, web.Application]) -> dict[str, float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(await resp.text()):
        if family.name.startswith("raftcache_watch"):
            for sample in family.samples:
                samples[sample.name] = sample.value
    return samples


async def test_metrics_follow_the_streams_and_the_history(make: Factory) -> None:
    watch = WatchSettings(heartbeat_s=0.2, max_watchers=1)
    cluster, client = await make(WatchHistory(max_changes=3), watch=watch)
    before = await scrape(client)
    assert before["raftcache_watch_streams"] == 0
    assert before["raftcache_watch_streams_opened_total"] == 0
    assert before["raftcache_watch_history_changes"] == 0

    for i in range(5):
        cluster.set(f"k{i}", b"v")
    gone = await client.get("/v1/watch?from_version=1")  # the history keeps 3 changes
    assert gone.status == 410
    resp = await client.get("/v1/watch")  # from now: version 5
    cluster.set("a", b"1")
    cluster.set("b", b"2")
    await messages(resp, 3)  # hello + two changes
    refused = await client.get("/v1/watch")  # max_watchers=1
    assert refused.status == 503

    during = await scrape(client)
    assert during["raftcache_watch_streams"] == 1
    assert during["raftcache_watch_streams_opened_total"] == 1
    assert during["raftcache_watch_events_sent_total"] == 2
    assert during["raftcache_watch_refused_total"] == 1
    assert during["raftcache_watch_compacted_total"] == 1
    assert during["raftcache_watch_history_changes"] == 3
    assert during["raftcache_watch_history_last_version"] == 7
    assert during["raftcache_watch_history_oldest_version"] == 4
    resp.close()
