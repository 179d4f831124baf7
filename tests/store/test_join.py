"""``raftcache serve --join``: its options, and the first start's reading of a running cluster's
map — what is refused (a removed id, an id held at another address, nothing there) and the
layout a joining store records."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import aiohttp
import pytest

from raftcache.process.cli import build_serve_parser, options_from_args
from raftcache.process.config import ConfigError, ServeOptions
from raftcache.process.store_server import _join_layout, _layout
from raftcache.store.layout import LayoutMismatchError
from tests.server.cluster import free_ports
from tests.store.test_meta_group import _start, _stop, remove


def parse(argv: list[str]) -> ServeOptions:
    parser = argparse.ArgumentParser()
    build_serve_parser(parser.add_subparsers(dest="command"))
    return options_from_args(parser.parse_args(["serve", *argv]), {})


def join_flags(tmp_path: Path, join: str, store: str = "s9", port: int = 9009) -> list[str]:
    return [
        "--id", store, "--listen", f"127.0.0.1:{port}", "--join", join,
        "--data-dir", str(tmp_path / store),
    ]  # fmt: skip


def test_join_options(tmp_path: Path) -> None:
    opts = parse([*join_flags(tmp_path, "http://10.0.0.1:8001/"), "--host-label", "rack-2"])
    assert opts.join == "http://10.0.0.1:8001"
    assert opts.peers == {"s9": "http://127.0.0.1:9009"}  # its own address, no --peers
    assert opts.host_label == "rack-2"
    assert opts.store_down_after_s == 300.0
    wild = parse(["--id", "s9", "--listen", "0.0.0.0:9009", "--join", "http://h:1",
                  "--advertise-host", "10.1.1.1", "--data-dir", str(tmp_path)])  # fmt: skip
    assert wild.peers == {"s9": "http://10.1.1.1:9009"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--join", "ftp://h:1"], "base URL"),
        (["--join", "http://h:1/path"], "base URL"),
        (["--listen", "0.0.0.0:9009"], "--advertise-host"),
        (["--listen", "127.0.0.1:0"], "fixed --listen port"),
        (["--id", "s9.1"], "hold no '.'"),
        (["--store-down-after", "-1"], "--store-down-after"),
    ],
)
def test_bad_join_options(tmp_path: Path, argv: list[str], message: str) -> None:
    flags = join_flags(tmp_path, "http://127.0.0.1:8001")
    for i in range(0, len(argv), 2):
        at = flags.index(argv[i]) if argv[i] in flags else None
        if at is None:
            flags += argv[i : i + 2]
        else:
            flags[at + 1] = argv[i + 1]
    with pytest.raises(ConfigError, match=message):
        parse(flags)


async def test_the_first_start_reads_the_map_and_refuses_what_it_must(tmp_path: Path) -> None:
    cluster, _ = await _start(["s1", "s2", "s3"], meta=["s1", "s2", "s3"], spare=0)
    try:
        await cluster.map_of("s1")
        url = cluster.urls["s2"]
        (port,) = free_ports(1)
        layout = await asyncio.to_thread(_layout, parse(join_flags(tmp_path, url, "s9", port)))
        assert layout.joined
        assert layout.stores == ("s1", "s2", "s3")
        assert layout.urls == {s: cluster.urls[s] for s in ("s1", "s2", "s3")}
        assert layout.meta == ("s1", "s2", "s3")
        assert layout.hosted_by("s9") == []
        assert (tmp_path / "s9" / "SHARDS").exists()
        # Started again with another --join (or none reachable): the record is enough.
        again = await asyncio.to_thread(
            _layout, parse(join_flags(tmp_path, "http://127.0.0.1:1", "s9", port))
        )
        assert again == layout

        # An id the map holds at another address is someone else's.
        with pytest.raises(LayoutMismatchError, match="already in this cluster"):
            await asyncio.to_thread(_join_layout, parse(join_flags(tmp_path, url, "s1", port)))
        # A removed id is never used again.
        async with aiohttp.ClientSession() as session:
            body = {"id": "s7", "host": "h7", "http_url": f"http://127.0.0.1:{port}"}
            async with session.post(f"{url}/raft/meta/stores", json=body) as answer:
                assert answer.status == 200
            await remove(session, url, "s7")
            async with session.post(f"{url}/raft/meta/stores", json=body) as answer:
                assert answer.status == 409
                assert "never reused" in (await answer.json())["error"]
        with pytest.raises(LayoutMismatchError, match="never reused"):
            await asyncio.to_thread(_join_layout, parse(join_flags(tmp_path, url, "s7", port)))
        # Nothing listening there.
        (dead,) = free_ports(1)
        with pytest.raises(LayoutMismatchError, match="cannot read the cluster map"):
            await asyncio.to_thread(
                _join_layout,
                parse(join_flags(tmp_path / "x", f"http://127.0.0.1:{dead}", "s8", port)),
            )
    finally:
        await _stop(cluster)
