"""A follower must keep reaching its peers at the addresses it was configured with.

Each node of the harness reaches every peer through its own proxy (its ``--peers``), so the
nodes hold different address maps, as nodes behind different networks, DNS views or a
sidecar would. Until f4016c6 the bootstrap configuration of a node carried the addresses of
its own ``--peers``, and a snapshot carries the configuration of the node that took it: a
follower that installed the leader's snapshot adopted the *leader's* view of every address —
the leader's own URL for itself included — and from then on bypassed its own routes (in the
harness: the proxy mesh, so partitions leaked; in a deployment where a node lists itself as
``127.0.0.1``, its followers would have dialled their own loopback). Kept as a regression test.

The check: isolate the follower in the mesh (``ProcessCluster.mesh_leaks``); no write may
commit through it, before and after it installed the leader's snapshot.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from raftcache.testing.harness import ProcessCluster
from raftcache.testing.httpops import NodeApi

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(180)]

FIXED_BUG = (  # kept as the record of what this test caught
    "raft: a follower that installs a snapshot adopts the peer addresses of the leader's "
    "bootstrap configuration (built from the leader's --peers), overriding its own --peers"
)


async def test_installing_a_snapshot_keeps_the_followers_own_addresses(tmp_path: Path) -> None:
    api = NodeApi(timeout_s=10.0)
    try:
        async with ProcessCluster(["n1", "n2", "n3"], tmp_path, rng=random.Random(11)) as cluster:
            leader = await cluster.wait_for_leader(60.0)
            follower = next(n for n in cluster.node_ids if n != leader)
            # The mesh holds before any snapshot was installed.
            assert await cluster.mesh_leaks(nodes=[follower]) == []
            leader = await cluster.wait_for_leader(60.0)

            # Make the follower miss entries that the leader then compacts into a snapshot,
            # so that it can only catch up by installing that snapshot.
            await cluster.kill(follower)
            for i in range(30):
                assert (await api.put(cluster.url(leader), f"k{i}", "x")).ok
            snap, _, _ = await api.request(cluster.url(leader), "POST", "/v1/snapshot", write=True)
            assert snap.ok, snap
            assert (await api.put(cluster.url(leader), "after", "x")).ok
            cluster.restart(follower)
            caught_up = await api.get(cluster.url(follower), "after", consistency="stale")
            for _ in range(100):
                if caught_up.ok and caught_up.value[0] == "x":
                    break
                await asyncio.sleep(0.1)
                caught_up = await api.get(cluster.url(follower), "after", consistency="stale")
            assert caught_up.ok
            assert caught_up.value[0] == "x"

            assert await cluster.mesh_leaks(nodes=[follower]) == []
    finally:
        await api.close()
