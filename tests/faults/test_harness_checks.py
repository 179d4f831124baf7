"""The harness against real processes, on the claims its checks rest on.

- The judge can fail: stale reads served by a follower cut off from the leader (asked for
  explicitly with ``consistency=stale``) make a history that the checker rejects. A harness
  whose checker never fires would pass every run.
- No acknowledged write is lost when every node is killed with SIGKILL at once and restarted.
- A node that exits by itself is reported as a crash, with its log, not taken for a fault.
- Nothing outlives the cluster: every node process is gone after ``stop``.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from raftcache.testing.harness import ClusterError, ProcessCluster
from raftcache.testing.history import HistoryRecorder
from raftcache.testing.httpops import NodeApi
from raftcache.testing.linearizability import Outcome, check_linearizable
from raftcache.testing.models import RegisterModel

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.timeout(180)]

NODES = ["n1", "n2", "n3"]


def pid_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state == "Z"


async def test_stale_reads_from_a_cut_off_follower_are_caught(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    recorder = HistoryRecorder(loop.time)
    api = NodeApi(timeout_s=10.0)
    pids: list[int] = []
    try:
        async with ProcessCluster(NODES, tmp_path, rng=random.Random(1)) as cluster:
            leader = await cluster.wait_for_leader(60.0)
            follower = next(n for n in NODES if n != leader)
            pids = [p.pid for p in cluster.nodes.values() if p.pid is not None]
            with recorder.record(0, "write", "k", "old") as op:
                assert (await api.put(cluster.url(leader), "k", "old")).ok
            # Wait until the follower has applied it, so its stale answer is known.
            for _ in range(200):
                seen = await api.get(cluster.url(follower), "k", consistency="stale")
                if seen.ok and seen.value[0] == "old":
                    break
                await asyncio.sleep(0.05)
            cluster.mesh.isolate(follower)
            with recorder.record(1, "write", "k", "new") as op:
                assert (await api.put(cluster.url(leader), "k", "new")).ok
            with recorder.record(2, "read", "k") as op:
                reply = await api.get(cluster.url(follower), "k", consistency="stale")
                assert reply.ok
                op.output = reply.value[0]
            cluster.mesh.heal()
    finally:
        await api.close()
    assert op.output == "old"  # the follower could not have learnt "new"
    result = check_linearizable(recorder.history(), RegisterModel(), timeout_s=30)
    assert result.outcome is Outcome.ILLEGAL, result.explain()
    assert pids
    assert all(pid_gone(pid) for pid in pids)


async def test_acknowledged_writes_survive_killing_every_node(tmp_path: Path) -> None:
    api = NodeApi(timeout_s=10.0)
    rng = random.Random(3)
    acked: dict[str, str] = {}
    try:
        async with ProcessCluster(NODES, tmp_path, rng=random.Random(2)) as cluster:
            await cluster.wait_for_leader(60.0)
            for i in range(60):
                key, value = f"d{i}", f"v{i}"
                if (await api.put(rng.choice(cluster.urls), key, value)).ok:
                    acked[key] = value
            await cluster.kill_all()
            assert sorted(cluster.dead()) == NODES
            cluster.heal_all()
            assert await cluster.wait_serving(60.0) is not None, cluster.describe_logs()
            found = {key: (await api.get(cluster.url(NODES[0]), key)).value for key in acked}
            assert cluster.check_crashes() == []
    finally:
        await api.close()
    assert len(acked) >= 50
    assert {k: v[0] for k, v in found.items()} == acked


async def test_a_node_that_exits_by_itself_is_a_crash(tmp_path: Path) -> None:
    cluster = ProcessCluster(
        NODES, tmp_path, rng=random.Random(4), extra_args=["--max-batch-ops", "not-a-number"]
    )
    with pytest.raises(ClusterError, match="node exited") as failure:
        async with cluster:
            pass
    # The first exit ends the wait; each one seen is a usage error (exit 2), with its log.
    assert cluster.crashes
    assert all(c.exit_code == 2 and "max-batch-ops" in c.log_tail for c in cluster.crashes)
    assert "max-batch-ops" in str(failure.value)
    assert all(not p.alive() for p in cluster.nodes.values())
    assert (tmp_path / "n1").is_dir()
