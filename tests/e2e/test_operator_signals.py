"""What an operator gets from a real ``raftcache serve`` process: the start line and the metrics
that the shipped Grafana dashboard and Prometheus alert rules (``deploy/``) read.

The rules and the dashboard are parsed (YAML, JSON), and every metric name used in one of their
expressions must be a family — or a sample of one: ``_total``, ``_bucket`` ... — of the real
node's ``/metrics``. ``promtool check rules`` runs too when promtool is installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

from raftcache import __version__
from tests.e2e.nodes import ProcessCluster, wait_for, wait_for_leader

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
GRAFANA = ROOT / "deploy" / "grafana" / "raftcache.json"
FAST = ["--election-timeout-min", "0.2", "--election-timeout-max", "0.4"]
#: What a metric name in PromQL looks like here: our own families and the process collector's.
METRIC = re.compile(r"\b(?:raftcache|process)_[a-z0-9_]+\b")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def grafana_exprs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from grafana_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from grafana_exprs(item)


def exposed_names(text: str) -> set[str]:
    """Every name a query may use: each family with the suffixes of its type."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return names


def test_rules_and_dashboard_parse() -> None:
    rules = alert_rules()
    wanted = {
        "RaftcacheQuorumAtRisk",
        "RaftcacheLeaderChurn",
        "RaftcacheFollowerLag",
        "RaftcacheFsyncSlow",
        "RaftcacheDiskFull",
        "RaftcacheDiskLow",
    }
    assert wanted <= {r["alert"] for r in rules}
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert METRIC.search(rule["expr"]), rule["alert"]
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["uid"] == "raftcache"
    titles = {p["title"] for p in dashboard["panels"]}
    for needed in ("Leader per group", "fsync latency", "Memory", "Evictions and expirations"):
        assert needed in titles
    assert len(list(grafana_exprs(dashboard))) >= 20
    promtool = shutil.which("promtool")
    if promtool is not None:  # not on the development VM; checked where it is installed
        done = subprocess.run(
            [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.e2e
async def test_start_line_and_every_queried_metric_exists(tmp_path: Path) -> None:
    with ProcessCluster(tmp_path, size=1, extra_args=FAST) as cluster:
        cluster.start_all()
        (node,) = cluster.nodes.values()
        async with aiohttp.ClientSession() as http:
            await wait_for_leader(cluster, http)
            async with http.put(f"{node.url}/v1/keys/k", data=b"v") as resp:
                assert resp.status == 200
            async with http.get(f"{node.url}/metrics") as resp:
                text = await resp.text()

            async def leader_line() -> bool | None:
                return True if "leader changed" in node.log_path.read_text() else None

            await wait_for(leader_line, "the leader line", cluster=cluster)
        log = node.log_path.read_text()
    (start,) = [line for line in log.splitlines() if "node starting" in line]
    assert f"version={__version__}" in start
    assert re.search(r" http_front=(lean|aiohttp) ", start), start
    assert re.search(r" loop=(uvloop|asyncio) ", start), start
    assert re.search(r" transport=http/json/(lean|aiohttp) ", start), start
    assert f"data_dir={node.data_dir}" in start
    assert re.search(r"INFO raftcache\.raft\.events: leader changed node=n1 leader=n1 term=\d", log)
    names = exposed_names(text)
    used = {name: rule["alert"] for rule in alert_rules() for name in METRIC.findall(rule["expr"])}
    used |= {
        name: "grafana"
        for e in grafana_exprs(json.loads(GRAFANA.read_text()))
        for name in METRIC.findall(e)
    }
    missing = {name: where for name, where in used.items() if name not in names}
    assert not missing, missing
