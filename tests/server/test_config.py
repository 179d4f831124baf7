"""``raftcache serve`` options: parsing, validation and precedence flags > env > file > defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from raftcache.process.cli import build_serve_parser, main_serve, options_from_args
from raftcache.process.config import ConfigError, ServeOptions, parse_listen, parse_peers
from raftcache.process.serve import raft_config_of

PEERS = "n1=http://127.0.0.1:8001,n2=http://127.0.0.1:8002"


def parse(argv: list[str], env: dict[str, str] | None = None) -> ServeOptions:
    parser = argparse.ArgumentParser()
    build_serve_parser(parser.add_subparsers(dest="command"))
    return options_from_args(parser.parse_args(["serve", *argv]), env or {})


def base_flags(tmp_path: Path) -> list[str]:
    return [
        "--id",
        "n1",
        "--listen",
        "127.0.0.1:8001",
        "--peers",
        PEERS,
        "--data-dir",
        str(tmp_path / "d"),
    ]


def test_flags_and_defaults(tmp_path: Path) -> None:
    opts = parse([*base_flags(tmp_path), "--max-value-bytes", "2048", "--log-format", "json"])
    assert (opts.id, opts.host, opts.port) == ("n1", "127.0.0.1", 8001)
    assert opts.peers == {"n1": "http://127.0.0.1:8001", "n2": "http://127.0.0.1:8002"}
    assert opts.data_dir == tmp_path / "d"
    assert opts.max_value_bytes == 2048
    assert opts.log_format == "json"
    assert opts.cluster_token is None
    assert opts.shutdown_timeout_s == 10.0
    assert opts.sources["max_value_bytes"] == "flag"
    assert opts.sources["max_keys"] == "default"
    assert opts.propose_timeout_s == 10.0
    assert raft_config_of(opts).propose_timeout == 10.0
    tuned = parse([*base_flags(tmp_path), "--propose-timeout", "2.5"])
    assert raft_config_of(tuned).propose_timeout == 2.5


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        'cluster-token = "from-file"\nclient_token = "file-client"\nmax_keys = 10\n'
        'max-bytes = 999\nleader_wait = 0.5\n[peers]\nn1 = "http://127.0.0.1:8001"\n'
    )
    env = {
        "RAFTCACHE_CLUSTER_TOKEN": "from-env",
        "RAFTCACHE_MAX_KEYS": "20",
        "RAFTCACHE_CONFIG": str(config),
    }
    opts = parse(["--id", "n1", "--listen", "h:1", "--data-dir", "d", "--max-keys", "30"], env)
    assert opts.max_keys == 30  # flag beats env and file
    assert opts.cluster_token == "from-env"  # env beats file
    assert opts.client_token == "file-client"  # file beats default
    assert opts.max_bytes == 999
    assert opts.leader_wait_s == 0.5
    assert opts.peers == {"n1": "http://127.0.0.1:8001"}  # a TOML table works too
    assert opts.max_value_bytes == 1024 * 1024  # default
    assert opts.sources["cluster_token"] == "env"
    assert opts.sources["client_token"] == "file"


def test_config_flag_beats_config_env(tmp_path: Path) -> None:
    one, two = tmp_path / "one.toml", tmp_path / "two.toml"
    one.write_text('client_token = "one"\n')
    two.write_text('client_token = "two"\n')
    opts = parse([*base_flags(tmp_path), "--config", str(two)], {"RAFTCACHE_CONFIG": str(one)})
    assert opts.client_token == "two"


def test_everything_from_env(tmp_path: Path) -> None:
    env = {
        "RAFTCACHE_ID": "n2",
        "RAFTCACHE_LISTEN": "[::1]:0",
        "RAFTCACHE_PEERS": PEERS,
        "RAFTCACHE_DATA_DIR": str(tmp_path),
        "RAFTCACHE_LOG_LEVEL": "DEBUG",
    }
    opts = parse([], env)
    assert (opts.id, opts.host, opts.port, opts.log_level) == ("n2", "::1", 0, "debug")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--listen", "nohost"], "--listen"),
        (["--listen", "h:99999"], "--listen"),
        (["--peers", "n1=ftp://x"], "--peers"),
        (["--peers", "n2=http://x:1"], "not listed"),
        (["--peers", "n1=http://a:1,n1=http://b:1"], "twice"),
        (["--max-keys", "0"], "--max-keys"),
        (["--max-value-bytes", "lots"], "--max-value-bytes"),
        (["--log-format", "xml"], "--log-format"),
        (["--tls-cert", "c.pem"], "together"),
        (["--tls-ca", "ca.pem"], "--tls-ca"),
        (["--shutdown-timeout", "inf"], "--shutdown-timeout"),
        (["--resp-port", "7001", "--resp-cluster-port", "7001"], "must differ"),
        (["--resp-cluster-port", "70000"], "--resp-cluster-port"),
        (["--advertise-host", ""], "--advertise-host"),
        (["--advertise-host", "bad host"], "--advertise-host"),
        (["--advertise-host", "h:7000"], "--advertise-host"),
        (["--advertise-host", "a\nb"], "--advertise-host"),
        (["--advertise-host", "-"], "--advertise-host"),
        (["--advertise-host", "10.0.0.300"], "--advertise-host"),
        (["--advertise-host", "0.0.0.0"], "--advertise-host.*wildcard"),
        (["--advertise-host", "::"], "--advertise-host.*wildcard"),
        (["--advertise-host", "[::]"], "--advertise-host.*wildcard"),
        (["--sentinel-name", ""], "--sentinel-name"),
        (["--sentinel-name", "my master"], "--sentinel-name"),
        (["--groups", "0"], "--groups"),
        (["--groups", "16385"], "--groups"),
        (["--replicas", "8"], "--replicas"),
        (["--groups", "2", "--id", "n.1", "--peers", "n.1=http://127.0.0.1:8001"], "hold no '.'"),
    ],
)
def test_invalid_options(tmp_path: Path, extra: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse([*base_flags(tmp_path), *extra])


def test_missing_required_options() -> None:
    with pytest.raises(ConfigError, match=r"--id.*--listen.*--peers.*--data-dir"):
        parse([])


def test_bad_config_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse([*base_flags(tmp_path), "--config", str(bad)])
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="unknown option 'colour'"):
        parse([*base_flags(tmp_path), "--config", str(unknown)])
    wrong_type = tmp_path / "type.toml"
    wrong_type.write_text("max_keys = true\n")
    with pytest.raises(ConfigError, match="--max-keys"):
        parse([*base_flags(tmp_path), "--config", str(wrong_type)])
    with pytest.raises(ConfigError, match="cannot read"):
        parse([*base_flags(tmp_path), "--config", str(tmp_path / "absent.toml")])


def test_main_serve_reports_config_errors_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    build_serve_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["serve", "--id", "n9", "--listen", "h:1", "--peers", PEERS, "--data-dir", str(tmp_path)]
    )
    assert args.func is main_serve
    assert main_serve(args, env={}) == 2
    assert "n9 is not listed in --peers" in capsys.readouterr().err


def test_resp_port_and_raft_timing_are_parsed(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    build_serve_parser(parser.add_subparsers(dest="command"))
    flags = [*base_flags(tmp_path), "--resp-port", "6379", "--snapshot-threshold", "50"]
    flags += ["--election-timeout-min", "0.5", "--election-timeout-max", "0.9"]
    args = parser.parse_args(["serve", *flags])
    options = options_from_args(args, {})
    assert options.resp_port == 6379
    assert options.snapshot_threshold == 50
    config = raft_config_of(options)
    assert (config.election_timeout_min, config.election_timeout_max) == (0.5, 0.9)
    assert config.snapshot_threshold == 50


def test_parsers() -> None:
    assert parse_listen("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_peers("a=http://x:1/, b=https://y:2") == {"a": "http://x:1", "b": "https://y:2"}


def test_http_front_and_loop_options(tmp_path: Path) -> None:
    defaults = parse(base_flags(tmp_path))
    assert (defaults.http_front, defaults.loop) == ("auto", "auto")
    given = parse([*base_flags(tmp_path), "--loop", "asyncio"], {"RAFTCACHE_HTTP_FRONT": "aiohttp"})
    assert (given.http_front, given.loop) == ("aiohttp", "asyncio")
    with pytest.raises(ConfigError, match="--http-front"):
        parse([*base_flags(tmp_path), "--http-front", "fast"])
    with pytest.raises(ConfigError, match="--loop"):
        parse([*base_flags(tmp_path), "--loop", "trio"])


def test_a_resp_port_cannot_be_the_http_port(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="both --listen's and a RESP port"):
        parse([*base_flags(tmp_path), "--resp-cluster-port", "8001"])


def test_the_sentinel_service_name_from_flag_env_and_default(tmp_path: Path) -> None:
    assert parse(base_flags(tmp_path)).sentinel_name == "raftcache"
    assert parse([*base_flags(tmp_path), "--sentinel-name", "cache-a"]).sentinel_name == "cache-a"
    from_env = parse(base_flags(tmp_path), {"RAFTCACHE_SENTINEL_NAME": "cache.b"})
    assert from_env.sentinel_name == "cache.b"


def test_the_advertised_host_for_redis_clients(tmp_path: Path) -> None:
    from raftcache.process.serve import advertise_host

    assert advertise_host(parse(base_flags(tmp_path))) == "127.0.0.1"
    wildcard = [*base_flags(tmp_path), "--listen", "0.0.0.0:8001"]
    wildcard += ["--peers", "n1=http://cache-1.lan:8001,n2=http://cache-2.lan:8001"]
    assert advertise_host(parse(wildcard)) == "cache-1.lan"  # its own --peers entry
    chosen = [*wildcard, "--advertise-host", "cache-1.internal"]
    assert advertise_host(parse(chosen)) == "cache-1.internal"
    for given, advertised in (("::1", "::1"), ("[fd00::7]", "fd00::7"), ("cache_1", "cache_1")):
        assert advertise_host(parse([*wildcard, "--advertise-host", given])) == advertised


def test_the_advertised_host_is_never_a_wildcard(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Listening on all interfaces and named by a wildcard in --peers too: clients are told
    the machine's name (with a warning saying how to choose), never 0.0.0.0 or ::."""
    import socket

    from raftcache.process.serve import advertise_host

    for listen, peer in (("0.0.0.0:8001", "0.0.0.0"), ("[::]:8001", "[::]")):
        argv = [*base_flags(tmp_path), "--listen", listen, "--peers", f"n1=http://{peer}:8001"]
        caplog.clear()
        with caplog.at_level("WARNING", logger="raftcache"):
            assert advertise_host(parse(argv)) == socket.gethostname()
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert "--advertise-host" in caplog.records[0].getMessage()
