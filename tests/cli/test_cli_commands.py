"""The one-shot commands, monitor and bench, run in-process against the fake HTTP API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import cli
from tests.client.client_fakes import FakeCluster, Fault, closed_port_url, threaded_cluster


@pytest.fixture
def fake() -> Iterator[FakeCluster]:
    with threaded_cluster() as cluster:
        yield cluster


def run(fake: FakeCluster, *argv: str) -> int:
    return cli([*argv, "--endpoints", ",".join(fake.endpoints())])


def test_set_get_incr_del(fake: FakeCluster, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert run(fake, "set", "a/b", "héllo", "--ttl", "30") == 0
    version = int(capsysbinary.readouterr().out)
    assert fake.store["a/b"] == ("héllo".encode(), version)
    assert run(fake, "get", "a/b") == 0
    assert capsysbinary.readouterr().out == "héllo".encode()  # raw, no newline when piped
    assert run(fake, "incr", "n", "--by", "7") == 0
    assert run(fake, "incr", "n") == 0
    assert capsysbinary.readouterr().out.split() == [b"7", b"8"]
    assert run(fake, "del", "n") == 0
    assert run(fake, "del", "n") == 1  # missing: exit 1, as get
    captured = capsysbinary.readouterr()
    assert captured.out == b"deleted\n"
    assert captured.err == b"raftcache del: error: key not found: n\n"
    assert any(r.raw_path == "/v1/keys/a%2Fb?ttl=30.0" for r in fake.requests)


def test_get_missing_key_exits_1(fake: FakeCluster, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(fake, "get", "nope") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "key not found: nope" in captured.err


def test_refused_request_exits_2_and_unavailable_cluster_exits_3(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.store["s"] = (b"text", 1)
    assert run(fake, "incr", "s") == 2
    assert "raftcache incr: error:" in capsys.readouterr().err
    dead = f"{closed_port_url()},{closed_port_url()}"
    assert cli(["get", "k", "--endpoints", dead, "--timeout", "0.5"]) == 3
    assert "raftcache get: error:" in capsys.readouterr().err
    fake.faults.extend(Fault(status=503) for _ in range(200))
    assert run(fake, "set", "k", "v", "--timeout", "0.5") == 3


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli(["set", "only-key"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        cli(["bench", "--connections", "0"])
    assert info.value.code == 2
    assert cli(["get", "k", "--endpoints", "ftp://x"]) == 2
    assert "not an http(s) endpoint" in capsys.readouterr().err


def test_endpoints_come_from_the_environment(
    fake: FakeCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAFTCACHE_ENDPOINTS", ",".join(fake.endpoints()))
    assert cli(["incr", "env"]) == 0
    assert capsys.readouterr().out.strip() == "1"


def test_status_table_and_json(fake: FakeCluster, capsys: pytest.CaptureFixture[str]) -> None:
    endpoints = [*fake.endpoints(), closed_port_url()]
    assert cli(["status", "--endpoints", ",".join(endpoints)]) == 0
    table = capsys.readouterr().out
    for word in ("n1", "n2", "n3", "leader", "follower", "unreachable", "commit", "applied"):
        assert word in table
    assert cli(["status", "--json", "--endpoints", ",".join(endpoints)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["role"] for r in rows] == ["leader", "follower", "follower", "unreachable"]
    assert rows[0]["commit"] == fake.index
    assert cli(["status", "--endpoints", closed_port_url(), "--timeout", "0.5"]) == 3


def test_keys_lists_in_order_with_prefix(
    fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in ("b:2", "a:1", "b:1", "b:3"):
        fake.store[key] = (b"x", 1)
    assert run(fake, "keys", "--prefix", "b:", "--limit", "2") == 0
    assert capsys.readouterr().out.split() == ["b:1", "b:2"]


def test_monitor_once_and_json_export(
    fake: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "samples.jsonl"
    assert run(fake, "monitor", "--count", "2", "--interval", "0.05", "--json", str(export)) == 0
    out = capsys.readouterr().out
    assert "leader n1" in out
    samples = [json.loads(line) for line in export.read_text().splitlines()]
    assert len(samples) == 2
    assert samples[0]["leader"] == "n1"
    assert samples[0]["writes_per_s"] is None  # no rate from a single poll
    assert samples[1]["writes_per_s"] == 0.0
    assert [n["lag"] for n in samples[1]["nodes"]] == [0, 0, 0]
    assert run(fake, "monitor", "--once", "--compact") == 0
    assert "n2 F" in capsys.readouterr().out


def test_bench_mixed_reports_percentiles(
    fake: FakeCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path = tmp_path / "bench.json"
    argv = ["bench", "--op", "mixed", "--duration", "0.5", "--connections", "4", "--keys", "20"]
    assert run(fake, *argv, "--value-size", "16", "--json", str(report_path)) == 0
    assert "p99 ms" in capsys.readouterr().out
    report = json.loads(report_path.read_text())
    rows = {r["op"]: r for r in report["results"]}
    assert set(rows) == {"get", "set", "all"}
    assert rows["all"]["ops"] == rows["get"]["ops"] + rows["set"]["ops"] > 0
    assert rows["get"]["ops"] > rows["set"]["ops"]  # read ratio 0.8
    for row in rows.values():
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert sum(k.startswith("bench:") for k in fake.store) == 20  # prefilled
    assert fake.duplicates == 0
