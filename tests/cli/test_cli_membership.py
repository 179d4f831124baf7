"""``raftcache member`` and ``raftcache leader transfer`` where the three-node cluster of
``test_cli_e2e`` cannot show it, on in-process nodes over real HTTP: a one-node cluster
(``tests.server.cluster``), whose leader refuses to remove its last voter or to hand over to
nobody, and a sharded cluster (stores of four groups, ``tests.store.stores_http``), where
``member`` points at ``raftcache store`` and ``leader transfer`` moves one group's leader with
``--group``. The one-group commands on three nodes (list, add a fourth node then remove it, the
command's own guards, a transfer to a named follower) are in ``test_cli_e2e``, on its cluster.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from tests.cli.conftest import cli
from tests.server.cluster import start_cluster
from tests.store.stores_http import RunningStores, bootstrap_placement, start_stores, store_ids


async def test_the_leader_refuses_to_remove_the_last_voter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alone = await start_cluster(tmp_path / "alone", size=1)
    try:
        await alone.leader()
        urls = ["--endpoints", alone.servers[0].url]
        remove = ["member", "remove", "n1", "--force", *urls]
        assert await asyncio.to_thread(cli, remove) == 2
        assert capsys.readouterr().err == (
            "raftcache member remove: error: the change would leave voters [] without a quorum "
            "this leader has heard from recently: refused\n"
        )
        assert await asyncio.to_thread(cli, ["leader", "transfer", *urls]) == 2
        assert capsys.readouterr().err == (
            "raftcache leader transfer: error: no other voter to transfer leadership to\n"
        )
        assert await asyncio.to_thread(cli, ["member", "list", "--json", *urls]) == 0
        rows: list[dict[str, Any]] = orjson.loads(capsys.readouterr().out)
        assert [(r["id"], r["role"]) for r in rows] == [("n1", "leader")]
    finally:
        await alone.stop()


async def test_a_sharded_cluster_points_member_at_store_and_transfers_by_group(
    capsys: pytest.CaptureFixture[str],
) -> None:
    urls, running = await start_stores(store_ids(3), groups=4)
    stores = RunningStores(4, running, aiohttp.ClientSession(), bootstrap_placement(list(urls), 4))
    try:
        leaders = await stores.settled()
        endpoints = ["--endpoints", ",".join(urls.values()), "--timeout", "20"]
        for argv in (["member", "list"], ["member", "add", "s4", "http://127.0.0.1:9"]):
            assert await asyncio.to_thread(cli, [*argv, *endpoints]) == 2
            err = capsys.readouterr().err
            prefix = f"raftcache {argv[0]} {argv[1]}: error: this is a sharded cluster"
            assert err.startswith(prefix)
            assert "raftcache store list|drain|remove|rebalance" in err
        assert await asyncio.to_thread(cli, ["leader", "transfer", *endpoints]) == 2
        assert "--group gN" in capsys.readouterr().err

        target = next(s for s in stores.placement["g1"] if s != leaders["g1"])
        argv = ["leader", "transfer", "--group", "g1", "--to", target, *endpoints]
        assert await asyncio.to_thread(cli, argv) == 0
        assert capsys.readouterr().out == f"leader {target}\n"
        assert stores.leader_of("g1") == target
    finally:
        await stores.stop()
