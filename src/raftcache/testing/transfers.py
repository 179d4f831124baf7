"""Adversarial leadership transfers: the old leader misses the news of its own succession.

Rule: a transfer is safe only if the old leader stops serving lease reads once it sent
TimeoutNow, because the transferee's vote requests carry a transfer flag that makes followers
grant votes *inside* their lease (Raft §3.10: no waiting out an election timeout). These
nemeses make the old leader miss every message that would depose it, while clients keep
sending it ``consistency=lease`` reads (the register workload pins lease readers to every
node, cut off or not); a stale answer is then a linearizability violation, checked strictly.

- ``transfer-partition``: the mesh cuts the leader off from everyone except its own
  connection to the transferee, which is slowed by ``d`` (0.08–0.2 s) each way; then the
  transfer is asked for. The harness polls the transferee's term (its client port, outside
  the mesh, every 10 ms): the moment it rises — the TimeoutNow arrived, the transferee
  campaigns — that last link is cut too (bytes still queued in it are lost; cut links
  refuse connections, so requests forwarded to the old leader fail at once instead of
  holding the writers that must commit through its successor), so its answers,
  its vote request and its appends, all carrying the new term and all at least ``d`` away,
  never arrive. The old leader keeps the lease its last acknowledged heartbeats gave it (0.9 s
  of its clock, from about ``d`` before the cut) while the transferee, voted in at once by the
  others (the transfer flag overrides their lease), commits new writes: ``0.9 - d`` seconds in
  which a lease read at the old leader is stale unless it refuses lease reads once it sent
  TimeoutNow.
- ``transfer-pause``: the transfer is asked for, and 0–50 ms later the old leader is
  SIGSTOPped for 0.2–0.8 s (less than a lease) and then resumed, with client reads and the
  new term's messages queued together on its sockets: a lease read served before the new
  term is processed is stale.

``facts`` records the transferee, when its term rose (``campaign_after_s``, from the transfer
request) and when it was seen leading (``led_after_s``); ``transferred`` is true when it led
within a second of its campaign — the proof that a TimeoutNow, not a later election after the
old leader stepped down, made it leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

from raftcache.testing.fault_proxy import ProxyMode
from raftcache.testing.harness import ProcessCluster
from raftcache.testing.membership import Heal, Injected

__all__ = ["TRANSFER_NEMESES", "inject_transfer"]

TRANSFER_NEMESES: tuple[str, ...] = ("transfer-partition", "transfer-pause")


async def _voters(cluster: ProcessCluster, leader: str) -> tuple[int, list[str]] | None:
    status = await cluster.api.status(cluster.url(leader))
    if status is None or status.get("role") != "leader" or not isinstance(status["term"], int):
        return None
    voters = [n for n in cluster.node_ids if n != leader and n in status.get("members", [])]
    return status["term"], voters


async def _watch_transferee(
    cluster: ProcessCluster,
    target: str,
    old_term: int,
    injected: Injected,
    stop: asyncio.Event,
    campaigned: asyncio.Event,
) -> None:
    """Record when ``target``'s term rose past ``old_term`` (``campaigned`` is set then) and
    when it led, while the fault is in force."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    facts = injected.facts
    while not stop.is_set():
        status = await cluster.api.status(cluster.url(target), timeout_s=0.5)
        now = round(loop.time() - start, 3)
        term = None if status is None else status.get("term")
        if isinstance(term, int) and term > old_term and not campaigned.is_set():
            facts["campaign_after_s"] = now
            campaigned.set()
        if status is not None and status.get("role") == "leader" and campaigned.is_set():
            facts["led_after_s"] = now
            facts["new_term"] = term
            facts["transferred"] = now - facts["campaign_after_s"] < 1.0
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.01)


async def inject_transfer(
    name: str, cluster: ProcessCluster, leader: str, rng: random.Random
) -> Injected | None:
    """Inject ``transfer-partition`` or ``transfer-pause`` at ``leader`` (see the module
    docstring); None when the leader has no voter to hand over to."""
    seen = await _voters(cluster, leader)
    if seen is None or not seen[1]:
        return None
    old_term, voters = seen
    target = rng.choice(voters)
    url = cluster.url(leader)
    stop = asyncio.Event()
    tasks: list[asyncio.Future[object]] = []
    if name == "transfer-partition":
        delay = round(rng.uniform(0.08, 0.2), 3)
        # REJECT, not a black hole: requests the followers forward to the old leader fail at
        # once instead of holding the writers that must commit through its successor.
        cluster.mesh.isolate(leader, mode=ProxyMode.REJECT)
        cluster.mesh.set_link(leader, target, ProxyMode.DELAY, delay_s=delay, jitter_s=0.0)
        detail = f"transfer {leader} -> {target}, {leader} cut off (its link to {target} "
        detail += f"slowed by {delay} s, cut once {target} campaigns)"
    elif name == "transfer-pause":
        delay = round(rng.uniform(0.0, 0.05), 3)
        pause = round(rng.uniform(0.2, 0.8), 3)
        detail = f"transfer {leader} -> {target}, SIGSTOP {leader} {delay} s later for {pause} s"
    else:
        raise ValueError(f"unknown transfer nemesis {name!r}")
    mesh = name == "transfer-partition"
    injected = Injected(name, detail, _heal(cluster, leader, stop, tasks, mesh=mesh))
    injected.facts.update(old_leader=leader, transferee=target, transferred=False)
    campaigned = asyncio.Event()
    tasks.append(asyncio.ensure_future(cluster.api.transfer_leader(url, target)))
    watch = _watch_transferee(cluster, target, old_term, injected, stop, campaigned)
    tasks.append(asyncio.ensure_future(watch))
    if name == "transfer-partition":
        # Its new term needs ``delay`` to reach the old leader: cut before it does (or give
        # up after 3 s: the transfer did not start, the old leader stays cut off).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(campaigned.wait(), 3.0)
        cluster.mesh.set_link(leader, target, ProxyMode.REJECT)
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
