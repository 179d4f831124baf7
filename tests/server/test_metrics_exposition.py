"""``/metrics`` of real in-process nodes, read back as Prometheus reads it.

The exposition is parsed with prometheus-client's own parser: every family has a HELP text and a
TYPE, counters' samples end in ``_total``, units are seconds and bytes (no ``_ms``), per-peer
series carry a ``peer`` label, and the process and build families are there.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from raftcache import __version__
from raftcache.server.metric_specs import ADMISSION_STATS, CACHE_STATS, RAFT_STATS
from tests.server.cluster import start_cluster


async def _scrape(tmp_path: Path) -> tuple[str, str, dict[str, object], dict[str, object]]:
    cluster = await start_cluster(tmp_path, 3)
    try:
        leader = await cluster.leader()
        session = cluster.session
        async with session.put(f"{leader.url}/v1/keys/a", data=b"1") as resp:
            assert resp.status == 200
        async with session.get(f"{leader.url}/v1/keys/a") as resp:
            assert resp.status == 200
        async with session.get(f"{leader.url}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        async with session.get(f"{leader.url}/v1/stats") as resp:
            stats = await resp.json()
        return leader.node.node_id, text, stats["raft"], stats["cache"]
    finally:
        await cluster.stop()


async def test_exposition_is_what_prometheus_expects(tmp_path: Path) -> None:
    leader, text, raft, cache = await _scrape(tmp_path)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples: dict[str, list[Sample]] = {}
    for family in families.values():
        # A family without HELP or TYPE parses with "" / "unknown": both are refused here.
        assert family.documentation, f"{family.name} has no HELP"
        assert "no spec yet" not in family.documentation, family.name
        assert family.type in {"counter", "gauge", "histogram", "summary"}, family.name
        assert "_ms" not in family.name, family.name
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
    # Every /v1/stats figure has a spec: no generic family reached the output.
    assert set(raft) <= set(RAFT_STATS), set(raft) - set(RAFT_STATS)
    assert set(cache) <= set(CACHE_STATS), set(cache) - set(CACHE_STATS)
    # The two that were gauges are counters now; the derivable ratio is gone.
    assert families["raftcache_raft_rpcs_failed"].type == "counter"
    assert families["raftcache_raft_state_transitions"].type == "counter"
    assert "raftcache_cache_hit_rate" not in families
    # Per-peer series are labelled by peer, in seconds.
    lag = samples["raftcache_raft_follower_lag"]
    assert {s.labels["peer"] for s in lag} == {"n1", "n2", "n3"} - {leader}
    latency = samples["raftcache_raft_replication_latency_seconds"]
    assert len(latency) == 2
    assert all(0 <= s.value < 5 for s in latency)
    assert samples["raftcache_raft_voters_reachable"][0].value == 3.0
    assert samples["raftcache_raft_fsync_duration_seconds_count"][0].value >= 0
    assert samples["raftcache_raft_rpcs_sent_total"][0].labels.keys() == {"rpc"}
    # Process and build facts.
    (build,) = samples["raftcache_build_info"]
    assert build.labels == {"version": __version__, "python": platform.python_version()}
    if sys.platform == "linux":
        for name in (
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ):
            assert samples[name][0].value > 0, name
    # Every admission figure is exported under its spec's name.
    for spec in ADMISSION_STATS.values():
        assert spec.name in families, spec.name


@pytest.mark.parametrize("specs", [RAFT_STATS, CACHE_STATS, ADMISSION_STATS])
def test_every_spec_follows_the_naming_rules(specs: dict[str, object]) -> None:
    for name, spec in specs.items():
        assert spec.help.endswith((".", ")")), name  # type: ignore[attr-defined]
        metric = spec.name  # type: ignore[attr-defined]
        if not metric:
            continue  # left out on purpose
        assert metric.startswith("raftcache_"), metric
        assert not metric.endswith("_total"), metric
        assert "_ms" not in metric, metric
