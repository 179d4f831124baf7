"""Clock faults (libfaketime): a cut-off leader whose clock jumped backwards.

The mesh isolates the leader, and at once its clocks — wall and monotonic — jump 30 s back
(no clock cache: the jump lands on the next clock read). Its timers stall and its lease,
measured on that clock, outlives real time: for about 30 s it still believes it leads and may
serve ``consistency=lease`` reads from its own state, while the others elect a new leader and
commit a newer value. Isolating first matters: were the old leader reachable while its
heartbeats stall, the new leader's first AppendEntries would depose it and there would be no
stale lease left to observe (the flake this order removed). 30 s leaves room for a slow
election on a loaded machine. A lease read trusts the clock
by design (docs/api.md), so it may be stale here; a ``linearizable`` read needs a quorum round
and must never be.

The test asserts both halves: the lease read *was* stale (so the fault really happened, and
the checker sees it: the history with lease reads is illegal), and the history without them
is linearizable. It needs libfaketime (Debian package ``libfaketime``).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from raftcache.testing.clocks import ClockControl, find_libfaketime
from raftcache.testing.harness import ProcessCluster
from raftcache.testing.history import HistoryRecorder, Operation
from raftcache.testing.httpops import NodeApi
from raftcache.testing.linearizability import Outcome, check_linearizable
from raftcache.testing.models import RegisterModel

LIBFAKETIME = find_libfaketime()

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.faults,
    pytest.mark.timeout(180),
    pytest.mark.skipif(LIBFAKETIME is None, reason="libfaketime is not installed"),
]

NODES = ["n1", "n2", "n3"]


async def new_leader(cluster: ProcessCluster, old: str, timeout_s: float) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        statuses = await cluster.statuses()
        for node, status in statuses.items():
            if node != old and status and status.get("role") == "leader":
                return node
        await asyncio.sleep(0.2)
    raise AssertionError(f"no new leader within {timeout_s} s\n{cluster.describe_logs()}")


async def test_lease_reads_trust_the_clock_linearizable_reads_do_not(tmp_path: Path) -> None:
    assert LIBFAKETIME is not None
    loop = asyncio.get_running_loop()
    recorder = HistoryRecorder(loop.time)
    api = NodeApi(timeout_s=4.0)
    clock = ClockControl(LIBFAKETIME, tmp_path / "clocks", cache=False)
    try:
        async with ProcessCluster(NODES, tmp_path, rng=random.Random(5), clock=clock) as cluster:
            old = await cluster.wait_for_leader(60.0)
            with recorder.record(0, "write", "k", "v1"):
                assert (await api.put(cluster.url(old), "k", "v1")).ok
            # Let a lease read succeed once, so the lease is known to be in use.
            assert (await api.get(cluster.url(old), "k", consistency="lease")).ok

            cluster.mesh.isolate(old)
            cluster.set_clock_offset(old, -30.0)
            leader = await new_leader(cluster, old, timeout_s=30.0)
            with recorder.record(1, "write", "k", "v2") as op:
                reply = await api.put(cluster.url(leader), "k", "v2")
                assert reply.ok, reply

            with recorder.record(2, "read", "k", "lease") as op:
                reply = await api.get(cluster.url(old), "k", consistency="lease")
                if not reply.ok:
                    op.fail(reply.error)
                op.output = reply.value[0] if reply.ok else None
            with recorder.record(3, "read", "k", None) as op:
                reply = await api.get(cluster.url(old), "k")
                if not reply.ok:
                    op.fail(reply.error)
                op.output = reply.value[0] if reply.ok else None
            cluster.set_clock_offset(old, 0.0)  # its timers run again: shutdown is prompt
            cluster.heal_all()
    finally:
        await api.close()

    history = recorder.history()
    lease_read = next(o for o in history if o.input == "lease")
    assert lease_read.output == "v1", f"the fault did not bite: {lease_read.describe()}"
    assert check_linearizable(history, RegisterModel()).outcome is Outcome.ILLEGAL

    def strict(ops: list[Operation]) -> list[Operation]:
        return [o for o in ops if o.input != "lease"]

    result = check_linearizable(strict(history), RegisterModel())
    assert result.outcome is Outcome.OK, result.explain()
