"""ChaosSchedule: seeded, bounded, logged and replayable faults on an InMemoryHub."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftcache.network import (
    ChaosSchedule,
    InMemoryHub,
    InMemoryNetwork,
    NetworkError,
    ReliableNetwork,
)
from raftcache.network.chaos import ChaosEvent
from raftcache.raft.messages import RequestVoteRequest

from .fakes import RecordingHandlers

pytestmark = pytest.mark.looptime

IDS = ["n1", "n2", "n3", "n4", "n5"]


def cluster(ids: list[str] = IDS) -> tuple[InMemoryHub, dict[str, InMemoryNetwork]]:
    hub = InMemoryHub()
    nets = {}
    for i, node_id in enumerate(ids):
        net = InMemoryNetwork(node_id, hub=hub, drop_rate=0.01 * i, seed=i)
        net.register_handlers(RecordingHandlers(node_id))
        nets[node_id] = net
    return hub, nets


def state(hub: InMemoryHub) -> tuple[Any, ...]:
    rates = tuple((n.node_id, n.drop_rate) for n in hub)
    return hub.failed_nodes(), hub.partitions(), hub.isolated_nodes(), rates


def test_same_seed_same_events() -> None:
    first = ChaosSchedule(cluster()[0], IDS, seed=99)
    second = ChaosSchedule(cluster()[0], list(reversed(IDS)), seed=99)
    other = ChaosSchedule(cluster()[0], IDS, seed=100)
    runs = [[s.step() for _ in range(200)] for s in (first, second, other)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert first.events == runs[0]
    assert {e.action for e in runs[0]} == {
        "partition",
        "heal_partition",
        "isolate",
        "rejoin",
        "fail",
        "recover",
        "drop_rate",
        "heal_all",
    }


def test_never_fails_a_majority() -> None:
    hub, _ = cluster()
    chaos = ChaosSchedule(hub, IDS, seed=3, weights={"fail": 5, "recover": 1})
    most = 0
    for _ in range(300):
        chaos.step()
        most = max(most, len(hub.failed_nodes()))
        assert len(hub.failed_nodes()) <= 2
    assert most == 2
    strict = ChaosSchedule(
        cluster()[0], IDS, seed=3, max_failed=0, weights={"fail": 1, "partition": 1}
    )
    assert all(strict.step().action == "partition" for _ in range(50))


def test_drop_rates_stay_within_bounds() -> None:
    hub, nets = cluster()
    chaos = ChaosSchedule(hub, IDS, seed=8, max_drop_rate=0.3, weights={"drop_rate": 1})
    values = [chaos.step().value for _ in range(100)]
    assert all(v is not None and 0.0 <= v <= 0.3 for v in values)
    assert len(set(values)) > 10
    assert any(net.drop_rate != 0.01 * i for i, net in enumerate(nets.values()))


def test_replaying_the_log_reproduces_the_state() -> None:
    hub, _ = cluster()
    chaos = ChaosSchedule(hub, IDS, seed=17)
    for _ in range(60):
        chaos.step()
        copy, _ = cluster()
        ChaosSchedule.replay(copy, chaos.events)
        assert state(copy) == state(hub)


def test_heal_restores_everything_and_is_logged() -> None:
    hub, _ = cluster()
    before = state(hub)
    chaos = ChaosSchedule(hub, IDS, seed=5)
    for _ in range(40):
        chaos.step()
    assert state(hub) != before
    event = chaos.heal()
    assert event.action == "heal"
    assert state(hub) == before
    replayed, _ = cluster()
    ChaosSchedule.replay(replayed, chaos.events)
    assert state(replayed) == before


def test_log_is_printable() -> None:
    chaos = ChaosSchedule(cluster()[0], IDS, seed=1, weights={"partition": 1, "drop_rate": 1})
    for _ in range(5):
        chaos.step()
    lines = chaos.format_log().splitlines()
    assert len(lines) == 5
    assert lines[0].startswith("#0 ")
    assert str(ChaosEvent(3, "partition", ("n1", "n2"))) == "#3 partition n1 n2"
    assert str(ChaosEvent(4, "drop_rate", ("n1",), 0.25)) == "#4 drop_rate n1 0.25"


def test_bad_arguments() -> None:
    hub = InMemoryHub()
    with pytest.raises(ValueError, match="two nodes"):
        ChaosSchedule(hub, ["n1"], seed=1)
    with pytest.raises(ValueError, match="unknown"):
        ChaosSchedule(hub, IDS, seed=1, weights={"meteor": 1})
    with pytest.raises(ValueError, match="max_drop_rate"):
        ChaosSchedule(hub, IDS, seed=1, max_drop_rate=2)
    with pytest.raises(ValueError, match="unknown chaos action"):
        ChaosSchedule.apply(hub, ChaosEvent(0, "meteor"))


async def test_run_steps_on_loop_time(looptime: Any) -> None:
    hub, _ = cluster()
    chaos = ChaosSchedule(hub, IDS, seed=2)
    events = await chaos.run(interval=0.5, steps=8)
    assert looptime == 4.0
    assert events == chaos.events
    assert len(events) == 8


async def test_rpcs_under_chaos_always_finish(looptime: Any) -> None:
    """Every RPC ends (answer or NetworkError) whatever chaos does: nothing hangs."""
    hub, nets = cluster()
    for net in nets.values():
        net.set_delay(0.02, jitter=0.5)
    chaos = ChaosSchedule(hub, IDS, seed=11, max_drop_rate=0.5)
    senders = {i: ReliableNetwork(n, max_retries=2, initial_timeout=0.2) for i, n in nets.items()}
    outcomes: dict[str, int] = {}

    async def traffic(sender: str) -> None:
        for k in range(40):
            target = IDS[(IDS.index(sender) + 1 + k) % len(IDS)]
            try:
                await senders[sender].send_request_vote(target, RequestVoteRequest(k, sender, 0, 0))
                outcomes["ok"] = outcomes.get("ok", 0) + 1
            except NetworkError as exc:
                kind = "permanent" if exc.permanent else "transient"
                outcomes[kind] = outcomes.get(kind, 0) + 1
            await asyncio.sleep(0.05)

    async with asyncio.timeout(60):
        await asyncio.gather(chaos.run(0.1, 30), *(traffic(i) for i in IDS))
    assert sum(outcomes.values()) == 40 * len(IDS)
    assert outcomes.get("ok", 0) > 0
    assert outcomes.get("transient", 0) + outcomes.get("permanent", 0) > 0
    chaos.heal()
    assert await senders["n1"].send_request_vote("n2", RequestVoteRequest(1, "n1", 0, 0))
