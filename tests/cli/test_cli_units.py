"""Pure parts of the CLI: the monitor's numbers, bench percentiles, the supervisor's stop."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from raftcache.cli.bench import Recorder, percentile, summarize
from raftcache.cli.monitor import NodeSample, Sample, build_view
from raftcache.cli.supervisor import NodeSpec, Supervisor, plan_nodes, serve_command
from tests.cli.conftest import cli


def node(node_id: str, role: str, commit: int, applied: int, reads: int) -> NodeSample:
    status = {"id": node_id, "role": role, "term": 4, "commit_index": commit}
    status |= {"last_applied": applied, "leader": "n1"}
    raft = {"replication_latency_ms": {"n2": {"p50": 1.5}, "n3": 2.0}}
    stats = {"cache": {"hits": reads, "misses": 0}, "raft": raft}
    return NodeSample(f"http://{node_id}", status, stats, rtt_ms=0.5)


def test_monitor_view_rates_and_lag() -> None:
    before = Sample(
        10.0, 0.0, [node("n1", "leader", 100, 100, 10), node("n2", "follower", 100, 98, 0)]
    )
    after = Sample(
        12.0,
        2.0,
        [
            node("n1", "leader", 150, 150, 30),
            node("n2", "follower", 150, 140, 4),
            NodeSample("http://n3", {}, {}, None, "connection refused"),
        ],
    )
    view = build_view(before, after)
    assert (view.leader, view.term, view.up, view.total) == ("n1", 4, 2, 3)
    assert view.writes_per_s == 25.0  # (150 - 100) entries over 2 s
    assert view.reads_per_s == 12.0  # n1: 20 / 2 s, n2: 4 / 2 s
    assert [n.lag for n in view.nodes] == [0, 10, None]
    assert view.max_lag == 10
    assert [n.replication_ms for n in view.nodes] == [None, 1.5, None]
    assert view.nodes[2].role == "unreachable"
    first = build_view(None, after)
    assert first.writes_per_s is None
    assert first.reads_per_s is None


def test_percentiles_and_summary() -> None:
    values = [float(x) for x in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([], 0.5) == 0.0
    recorder = Recorder()
    for x in (0.001, 0.002, 0.003, 0.004):
        recorder.ok("get", x)
    recorder.ok("set", 0.010)
    recorder.failed("set", TimeoutError("slow"))
    rows = {r.op: r for r in summarize(recorder, elapsed_s=2.0)}
    assert rows["get"].ops == 4
    assert rows["get"].p50_ms == pytest.approx(2.0)
    assert rows["all"].ops_per_s == 2.5
    assert rows["all"].max_ms == pytest.approx(10.0)
    assert (rows["set"].errors, rows["get"].errors, rows["all"].errors) == (1, 0, 1)


def test_serve_command_lists_every_peer(tmp_path: Path) -> None:
    specs = plan_nodes(3, "127.0.0.1", 9001, tmp_path)
    argv = serve_command(specs[1], specs, ["--log-level", "debug"])
    assert argv[1:4] == ["-m", "raftcache", "serve"]
    peers = "n1=http://127.0.0.1:9001,n2=http://127.0.0.1:9002,n3=http://127.0.0.1:9003"
    assert argv[4:] == [
        "--id", "n2", "--listen", "127.0.0.1:9002", "--peers", peers,
        "--data-dir", str(tmp_path / "n2"), "--log-level", "debug",
    ]  # fmt: skip


def test_stores_of_a_local_sharded_cluster_get_hosts_of_their_own(tmp_path: Path) -> None:
    specs = plan_nodes(3, "127.0.0.1", 9001, tmp_path, own_hosts=True)
    argv = serve_command(specs[2], specs, ["--groups", "4"])
    at = argv.index("--host-label")
    assert argv[at : at + 2] == ["--host-label", "n3"]
    assert argv[-2:] == ["--groups", "4"]  # what the user passes comes last, and wins
    plain = serve_command(plan_nodes(3, "127.0.0.1", 9001, tmp_path)[2], specs)
    assert "--host-label" not in plain


def test_supervisor_kills_children_that_ignore_sigterm(tmp_path: Path) -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"

    def command(spec: NodeSpec) -> list[str]:
        return [sys.executable, "-c", stubborn]

    supervisor = Supervisor(plan_nodes(2, "127.0.0.1", 1, tmp_path), command_for=command)
    supervisor.start()
    time.sleep(0.3)  # let the children install their handler
    codes = supervisor.stop(grace_s=0.5)
    assert codes == {"n1": -signal.SIGKILL, "n2": -signal.SIGKILL}
    assert (tmp_path / "n1").is_dir()


def test_serve_placeholder_when_the_server_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "raftcache.process.cli", None)
    assert cli(["serve", "--id", "n1"]) == 2
    assert "not available" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli(["--version"])
    assert info.value.code == 0
