"""End to end: a watcher on a follower sees every acknowledged write under its prefix exactly once
and in log order, while several clients write concurrently — across a ``kill -9`` of the node it
watches (the client reconnects to another node from the last version it received).

Acknowledged means the client got an answer: a set's version, a delete's ``True``. Each writer
owns its keys and gives every set a unique value, so each acknowledged write names exactly one
change the watcher must have received: ``(set, key, value, version)``, or a delete of the key
after the set it followed. Writes under another prefix must not appear. The kill happens once the
watcher has received events from the follower (certain, not timed), and the check waits until the
watcher's version has reached the last acknowledged one.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from raftcache import AsyncClient, RaftcacheError
from raftcache.client import WatchEvent
from tests.e2e.nodes import ProcessCluster, wait_for, wait_for_leader

pytestmark = pytest.mark.e2e

WRITERS = 3
SETS_EACH = 30
KILL_AFTER_EVENTS = 20


class Writer:
    """Sets (and every fifth time deletes) its own keys; records what was acknowledged."""

    def __init__(self, client: AsyncClient, number: int) -> None:
        self.client = client
        self.number = number
        self.sets: list[tuple[str, bytes, int]] = []  # key, value, version
        self.deletes: list[tuple[str, int]] = []  # key, version of the set it followed
        self.errors: list[BaseException] = []

    async def run(self) -> None:
        for i in range(SETS_EACH):
            key, value = f"w:{self.number}:{i % 4}", f"{self.number}/{i}".encode()
            try:
                version = await self.client.set(key, value)
                self.sets.append((key, value, version))
                await self.client.set(f"other:{self.number}", value)  # not under the prefix
                if i % 5 == 4 and await self.client.delete(key):
                    self.deletes.append((key, version))
            except RaftcacheError as exc:
                self.errors.append(exc)


async def test_a_follower_watch_sees_every_acknowledged_write_once_across_a_kill(
    tmp_path: Path,
) -> None:
    with ProcessCluster(tmp_path, extra_args=["--watch-heartbeat", "0.5"]) as cluster:
        cluster.start_all()
        async with aiohttp.ClientSession() as http:
            leader = await wait_for_leader(cluster, http)
            follower, other = [n for n in cluster.live() if n is not leader]
            events: list[WatchEvent] = []
            watcher = AsyncClient([follower.url, other.url, leader.url])
            writers = [Writer(AsyncClient(cluster.endpoints, timeout=30), i) for i in range(3)]
            watch = watcher.watch("w:", from_version=0, idle_timeout=5.0)

            async def collect() -> None:
                async for event in watch:
                    events.append(event)

            collecting = asyncio.ensure_future(collect())
            try:
                running = [asyncio.ensure_future(w.run()) for w in writers]

                async def streaming_from_follower() -> bool | None:
                    assert not collecting.done(), collecting
                    enough = len(events) >= KILL_AFTER_EVENTS
                    return True if enough and watch.endpoint == follower.url else None

                await wait_for(streaming_from_follower, "events from the follower", cluster=cluster)
                seen_before_kill = len(events)
                assert cluster.kill(follower.node_id) == -9
                await asyncio.gather(*running)
                # Written after every acknowledged write (deletes answer no version): once the
                # watch has reached it, it has had the chance to see them all.
                last = await writers[0].client.set("w:end", b"")

                async def caught_up() -> bool | None:
                    assert not collecting.done(), collecting
                    return True if (watch.version or 0) >= last else None

                await wait_for(caught_up, f"the watch to reach version {last}", cluster=cluster)
                endpoint_after = watch.endpoint
            finally:
                collecting.cancel()
                await watch.aclose()
                await watcher.close()
                for w in writers:
                    await w.client.close()

        assert [e for w in writers for e in w.errors] == [], cluster.logs()
        assert seen_before_kill < len(events), "the watch must go on after the kill"
        assert endpoint_after not in (None, follower.url)
        assert watch.connections >= 2
        # Log order, no duplicate: versions never go down; one (key, type) per version at most.
        versions = [e.version for e in events]
        assert versions == sorted(versions)
        assert len({(e.version, e.key) for e in events}) == len(events)
        assert all(e.key.startswith("w:") for e in events)
        assert events[-1].key == "w:end"
        # Every acknowledged set exactly once, with its value and version.
        sets = Counter((e.key, e.value, e.version) for e in events if e.type == "set")
        for w in writers:
            for key, value, version in w.sets:
                assert sets[(key, value, version)] == 1, (key, value, version)
        # Every acknowledged delete: a delete of the key after the set it followed, before the
        # key's next set.
        for w in writers:
            for key, after in w.deletes:
                later = [e for e in events if e.key == key and e.version > after]
                assert later, (key, after)
                assert later[0].type == "delete", (key, after, later[0])
        assert sum(len(w.sets) for w in writers) == WRITERS * SETS_EACH


async def test_sigterm_ends_watch_streams_instead_of_waiting_for_the_shutdown_timeout(
    tmp_path: Path,
) -> None:
    # A shutdown timeout far beyond the exit wait: a drain held by the streams would fail this.
    args = ["--watch-heartbeat", "0.5", "--shutdown-timeout", "300"]
    with ProcessCluster(tmp_path, extra_args=args) as cluster:
        cluster.start_all()
        async with aiohttp.ClientSession() as http:
            leader = await wait_for_leader(cluster, http)
            target = next(n for n in cluster.live() if n is not leader)
            others = [n.url for n in cluster.live() if n is not target]
            async with AsyncClient([target.url, *others]) as client:
                watches = [client.watch("t:", idle_timeout=5.0) for _ in range(3)]
                pending = [asyncio.ensure_future(anext(w)) for w in watches]

                async def streaming() -> bool | None:
                    return True if all(w.endpoint == target.url for w in watches) else None

                await wait_for(streaming, "three streams from the target", cluster=cluster)
                cluster.send_signal(target.node_id, signal.SIGTERM)
                assert await cluster.wait_exit(target.node_id, timeout_s=60) == 0
                version = await client.set("t:after", b"v")
                for watch, first in zip(watches, pending, strict=True):
                    event = await asyncio.wait_for(first, 60)
                    # The stream moved to another node and missed nothing.
                    assert (event.key, event.version) == ("t:after", version)
                    assert watch.endpoint in others
                    await watch.aclose()
