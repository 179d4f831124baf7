"""A group's eviction bound is the same on every store (docs/sharding.md, "Budgets").

Eviction runs on each replica as it applies a write, so replicas of a group with different
``max_keys``/``max_bytes`` evict different keys and diverge. Stores host different numbers of
groups (5 stores × 4 groups × 3 replicas: 2 or 3 each; a store that joined: none at first),
so the bound must not depend on what a store hosts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from raftcache.process.cli import build_serve_parser, options_from_args
from raftcache.process.store_server import build_store_server
from tests.server.cluster import free_ports

STORES = ["s1", "s2", "s3", "s4", "s5"]


def test_every_store_gives_a_group_the_same_bound(tmp_path: Path) -> None:
    ports = free_ports(len(STORES))
    peers = ",".join(f"{s}=http://127.0.0.1:{p}" for s, p in zip(STORES, ports, strict=True))
    parser = argparse.ArgumentParser()
    build_serve_parser(parser.add_subparsers(dest="command"))
    bounds: dict[str, set[tuple[int | None, int | None]]] = {}
    hosted: dict[str, int] = {}
    for sid, port in zip(STORES, ports, strict=True):
        args = parser.parse_args([
            "serve", "--id", sid, "--listen", f"127.0.0.1:{port}", "--peers", peers,
            "--data-dir", str(tmp_path / sid), "--groups", "4", "--replicas", "3",
            "--max-keys", "4000", "--max-bytes", "4000000",
        ])  # fmt: skip
        server = build_store_server(options_from_args(args, {}))
        hosted[sid] = len(server.store.replicas)
        for gid, replica in server.store.replicas.items():
            stats = replica.machine.stats()
            bounds.setdefault(gid, set()).add((stats["max_keys"], stats["max_bytes"]))
    assert sorted(set(hosted.values())) == [2, 3]  # the stores differ in what they host
    assert bounds == {f"g{g}": {(1000, 1000000)} for g in range(4)}
