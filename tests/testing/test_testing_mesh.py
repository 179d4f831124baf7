"""ProxyMesh: per-pair proxies, addresses for each node, partitions as whole-mesh grudges."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from raftcache.testing import ProxyMesh, ProxyMode
from tests.testing.echo import EchoServer, leftover_tasks, reachable, roundtrip

NODES = ("a", "b", "c")
PASS, DROP, REJECT = ProxyMode.PASS, ProxyMode.DROP, ProxyMode.REJECT


@pytest.fixture
async def mesh() -> AsyncIterator[ProxyMesh]:
    # Each "node" is an echo server: reaching it through the mesh proves the path is open.
    servers = {n: EchoServer() for n in NODES}
    for s in servers.values():
        await s.start()
    m = ProxyMesh({n: s.port for n, s in servers.items()}, rng=random.Random(3))
    await m.start()
    yield m
    await m.stop()
    for s in servers.values():
        await s.stop()
    assert not leftover_tasks()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_addresses_route_through_one_proxy_per_ordered_pair(mesh: ProxyMesh) -> None:
    addrs = {n: mesh.addresses(n) for n in NODES}
    # A node reaches itself directly, everyone else through its own proxy.
    assert addrs["a"]["a"] != addrs["b"]["a"]
    ports = {addrs[src][dst] for src in NODES for dst in NODES if src != dst}
    assert len(ports) == 6
    for src in NODES:
        for dst in NODES:
            assert addrs[src][dst].startswith("http://127.0.0.1:")
            assert await roundtrip(port_of(addrs[src][dst]), f"{src}>{dst}".encode()) == (
                f"{src}>{dst}".encode()
            )
    assert mesh.proxy("a", "b").port == port_of(addrs["a"]["b"])
    assert mesh.url("a", "b", scheme="https").startswith("https://")


async def test_partition_cuts_between_groups_only(mesh: ProxyMesh) -> None:
    mesh.partition([["a"], ["b", "c"]], mode=REJECT)
    assert mesh.links() == {
        ("a", "b"): REJECT,
        ("a", "c"): REJECT,
        ("b", "a"): REJECT,
        ("c", "a"): REJECT,
        ("b", "c"): PASS,
        ("c", "b"): PASS,
    }
    assert not await reachable(mesh.proxy("a", "b").port, wait_s=10)
    assert not await reachable(mesh.proxy("c", "a").port, wait_s=10)
    assert await roundtrip(mesh.proxy("b", "c").port, b"bc") == b"bc"


async def test_partition_black_hole_by_default(mesh: ProxyMesh) -> None:
    mesh.partition([["a", "b"]])  # c is in no group: alone
    assert mesh.links()[("a", "b")] is PASS
    assert mesh.links()[("a", "c")] is DROP
    assert mesh.links()[("c", "b")] is DROP
    assert not await reachable(mesh.proxy("a", "c").port, wait_s=0.3)
    assert await roundtrip(mesh.proxy("b", "a").port, b"ba") == b"ba"


async def test_isolate_and_heal(mesh: ProxyMesh) -> None:
    mesh.isolate("b")
    assert {pair for pair, mode in mesh.links().items() if mode is DROP} == {
        ("a", "b"),
        ("b", "a"),
        ("b", "c"),
        ("c", "b"),
    }
    mesh.heal()
    assert set(mesh.links().values()) == {PASS}
    assert await roundtrip(mesh.proxy("a", "b").port, b"healed") == b"healed"


async def test_bridge_keeps_the_middle_connected(mesh: ProxyMesh) -> None:
    mesh.bridge(["a"], "b", ["c"])
    cut = {pair for pair, mode in mesh.links().items() if mode is DROP}
    assert cut == {("a", "c"), ("c", "a")}


async def test_asymmetric_link(mesh: ProxyMesh) -> None:
    mesh.set_link("a", "b", REJECT)
    assert not await reachable(mesh.proxy("a", "b").port, wait_s=10)
    assert await roundtrip(mesh.proxy("b", "a").port, b"ba") == b"ba"


async def test_each_operation_replaces_the_previous_grudge(mesh: ProxyMesh) -> None:
    mesh.isolate("a")
    mesh.isolate("c")
    assert mesh.links()[("a", "b")] is PASS
    assert mesh.links()[("c", "b")] is DROP


async def test_slow_link_via_delay(mesh: ProxyMesh) -> None:
    mesh.set_link("a", "c", ProxyMode.DELAY, delay_s=0.01, jitter_s=0.005)
    assert await roundtrip(mesh.proxy("a", "c").port, b"slow") == b"slow"


async def test_bad_arguments(mesh: ProxyMesh) -> None:
    with pytest.raises(ValueError, match="unknown node"):
        mesh.isolate("z")
    with pytest.raises(ValueError, match="two groups"):
        mesh.partition([["a", "b"], ["b"]])
    with pytest.raises(ValueError, match="exactly once"):
        mesh.bridge(["a"], "b", ["b", "c"])
    with pytest.raises(ValueError, match="exactly once"):
        mesh.bridge(["a"], "b", [])


async def test_fixed_base_port_allocation() -> None:
    # Ask the OS for a free port and lay the two proxies out from it; on a busy machine the
    # neighbouring port may be taken, so a few fresh bases are tried before giving up.
    for _attempt in range(10):
        async with ProxyMesh({"x": 1, "y": 2}) as probe:
            base = probe.proxy("x", "y").port
        m = ProxyMesh({"x": 1, "y": 2}, base_port=base)
        try:
            await m.start()
        except OSError:
            continue  # start() already stopped what it had started
        try:
            assert (m.proxy("x", "y").port, m.proxy("y", "x").port) == (base, base + 1)
            return
        finally:
            await m.stop()
    pytest.fail("no two consecutive free ports found in 10 attempts")
