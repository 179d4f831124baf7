"""Adversarial leadership transfers: the old leader misses the news of its own succession.

Rule: a transfer is safe only if the old leader stops serving lease reads once it sent
TimeoutNow, because the transferee's vote requests carry a transfer flag that makes followers
grant votes *inside* their lease (Raft §3.10: no waiting out an election timeout). These
nemeses make the old leader miss every message that would depose it, while clients keep
sending it ``consistency=lease`` reads (the register workload pins lease readers to every
node, cut off or not); a stale answer is then a linearizability violation, checked strictly.

- ``transfer-partition``: the mesh cuts the leader off from everyone except its own
  connection to the transferee, which is slowed by ``d`` (0.1–0.3 s) each way; then the
  transfer is asked for. The TimeoutNow gets through after ``d``; after ``1.5 d`` that last
  link is cut too (bytes still queued in it are lost), so the transferee's answers, its vote
  request and its first appends — all carrying the new term — never arrive. The old leader
  keeps the lease its last acknowledged heartbeats gave it (0.9 s of its clock) while the
  transferee, voted in at once by the third node, commits new writes.
- ``transfer-pause``: the transfer is asked for, and 0–50 ms later the old leader is
  SIGSTOPped for 0.2–0.8 s (less than a lease) and then resumed, with client reads and the
  new term's messages queued together on its sockets: a lease read served before the new
  term is processed is stale.

``facts`` records the transferee and whether it was seen leading during the window
(``transferred``) — the proof that the fault did what it claims.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

from raftcache.testing.harness import ProcessCluster
from raftcache.testing.membership import Heal, Injected
from raftcache.testing.proxy import ProxyMode

__all__ = ["TRANSFER_NEMESES", "inject_transfer"]

TRANSFER_NEMESES: tuple[str, ...] = ("transfer-partition", "transfer-pause")


async def _voters(cluster: ProcessCluster, leader: str) -> list[str] | None:
    status = await cluster.api.status(cluster.url(leader))
    if status is None or status.get("role") != "leader":
        return None
    return [n for n in cluster.node_ids if n != leader and n in status.get("members", [])]


async def _watch_transferee(
    cluster: ProcessCluster, target: str, injected: Injected, stop: asyncio.Event
) -> None:
    """Record whether ``target`` led (and in which term) while the fault was in force."""
    while not stop.is_set():
        status = await cluster.api.status(cluster.url(target), timeout_s=0.5)
        if status is not None and status.get("role") == "leader":
            injected.facts["transferred"] = True
            injected.facts["new_term"] = status.get("term")
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def inject_transfer(
    name: str, cluster: ProcessCluster, leader: str, rng: random.Random
) -> Injected | None:
    """Inject ``transfer-partition`` or ``transfer-pause`` at ``leader`` (see the module
    docstring); None when the leader has no voter to hand over to."""
    voters = await _voters(cluster, leader)
    if not voters:
        return None
    target = rng.choice(voters)
    url = cluster.url(leader)
    stop = asyncio.Event()
    tasks: list[asyncio.Future[object]] = []
    if name == "transfer-partition":
        delay = round(rng.uniform(0.1, 0.3), 3)
        cluster.mesh.isolate(leader)
        cluster.mesh.set_link(leader, target, ProxyMode.DELAY, delay_s=delay, jitter_s=0.0)
        detail = f"transfer {leader} -> {target}, {leader} cut off (its link to {target} "
        detail += f"slowed by {delay} s, then cut)"
    elif name == "transfer-pause":
        delay = round(rng.uniform(0.0, 0.05), 3)
        pause = round(rng.uniform(0.2, 0.8), 3)
        detail = f"transfer {leader} -> {target}, SIGSTOP {leader} {delay} s later for {pause} s"
    else:
        raise ValueError(f"unknown transfer nemesis {name!r}")
    mesh = name == "transfer-partition"
    injected = Injected(name, detail, _heal(cluster, leader, stop, tasks, mesh=mesh))
    injected.facts.update(old_leader=leader, transferee=target, transferred=False)
    tasks.append(asyncio.ensure_future(cluster.api.transfer_leader(url, target)))
    tasks.append(asyncio.ensure_future(_watch_transferee(cluster, target, injected, stop)))
    if name == "transfer-partition":
        await asyncio.sleep(delay * 1.5)
        cluster.mesh.set_link(leader, target, ProxyMode.DROP)
    else:
        await asyncio.sleep(delay)
        if cluster.pause(leader):
            await asyncio.sleep(pause)
            cluster.resume(leader)
    return injected


def _heal(
    cluster: ProcessCluster,
    leader: str,
    stop: asyncio.Event,
    tasks: list[asyncio.Future[object]],
    *,
    mesh: bool,
) -> Heal:
    async def heal() -> None:
        stop.set()
        if mesh:
            cluster.mesh.heal()
        else:
            cluster.resume(leader)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return heal
