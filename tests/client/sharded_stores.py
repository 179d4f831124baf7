"""Stores of a sharded cluster in-process for client tests: real ``Store``s of G groups, each
behind ``create_store_app`` on its own loopback port, with its Raft traffic on that same port
(``HttpNetwork``), as ``raftcache serve --groups`` runs them — minus the preferred-leader
balancer, so that leaders move only when a test moves them."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from raftcache.cache.machine import CacheStateMachine
from raftcache.store import group_id
from tests.store.stores_http import RunningStores, bootstrap_placement, keys_of, store_ids
from tests.store.stores_http import start_stores as start_servers

__all__ = ["ShardedStores", "keys_of", "start_stores"]


class ShardedStores(RunningStores):
    @property
    def endpoints(self) -> list[str]:
        return [r.url for r in self.running.values()]

    def leaders(self) -> dict[str, str | None]:
        return {group_id(g): self.leader_of(group_id(g)) for g in range(self.groups)}

    async def metrics(self, store_id: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of a store's ``/metrics``: (name, sorted labels) → value."""
        async with self.session.get(self.url(store_id) + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    async def forwarded(self) -> float:
        """Requests the live stores forwarded to a group leader, all groups together."""
        total = 0.0
        for sid, r in self.running.items():
            if r.up:
                samples = await self.metrics(sid)
                total += sum(
                    v
                    for (name, _), v in samples.items()
                    if name == "raftcache_http_forwarded_total"
                )
        return total

    async def served(self, store_id: str, route: str) -> dict[str, float]:
        """``route``'s requests a store answered, by status code."""
        counts: dict[str, float] = {}
        for (name, labels), value in (await self.metrics(store_id)).items():
            found = dict(labels)
            if name == "raftcache_http_requests_total" and found.get("route") == route:
                counts[found["code"]] = counts.get(found["code"], 0.0) + value
        return counts

    async def stop_store(self, store_id: str) -> None:
        """Stop a store as a crash would look to a client: its port closes, its groups go."""
        await self.running[store_id].stop()


async def start_stores(count: int = 3, groups: int = 4) -> ShardedStores:
    """``count`` stores of ``groups`` groups (RF 3), every group with a leader."""
    ids = store_ids(count)
    placement = bootstrap_placement(ids, groups)
    _, running = await start_servers(
        ids, groups=groups, placement=placement, machine=lambda gid: CacheStateMachine()
    )
    stores = ShardedStores(groups, running, aiohttp.ClientSession(), placement)
    await stores.settled()
    return stores
