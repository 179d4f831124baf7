"""A node restarted with a wrong ``--peers``: a typo, a stale configuration file.

Rule: a node with state on disk takes its membership from its data directory, never from its
flags. The contract the nemesis checks: when ``--peers`` names a voter set the node recorded
before (its bootstrap or an earlier configuration) it starts with a WARNING and the disk's
membership; otherwise it *refuses to start*: a non-zero exit and a message on stderr naming
the difference (the ids added and missing). Either way the history must stay
linearizable — a wrong-peers node that starts and leads a cluster of its own (the dangerous
typo: only itself) is a second leader, and the register workload, which sends requests to
every node, must catch it.

``peers`` (a random node) and ``peers-leader`` kill the node and start it again at once with
one of these voter sets:

- ``self``: only itself (the typo that makes it a single-voter cluster);
- ``typo``: one peer's id misspelled (``n2`` -> ``n22``, at that peer's address);
- ``missing``: one peer left out (a stale list);
- ``extra``: an id that never existed added (``n9`` at an address nobody listens on).

Then, within ``OBSERVE_S``: an exit is a *refusal* (exit code and stderr recorded; exit 0 or
a stderr that does not name every id of the difference breaks the contract); a node still
running is *started* (its ``/v1/status`` members recorded; members other than the cluster's
real voters — the flags won over the disk — break the contract, and so does starting at all
on a set no leader ever reported, for the first three variants, which the harness never
creates). A broken contract is reported as a violation (``facts["violation"]``). The heal kills
the node if it runs and restarts it with its right flags.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path

from raftcache.testing.harness import ProcessCluster
from raftcache.testing.membership import Injected, membership
from raftcache.testing.procs import free_port

__all__ = ["OBSERVE_S", "PEERS_NEMESES", "PEERS_VARIANTS", "inject_peers", "wrong_peers"]

PEERS_NEMESES: tuple[str, ...] = ("peers", "peers-leader")
PEERS_VARIANTS: tuple[str, ...] = ("self", "typo", "missing", "extra")
#: How long a refusal may take (interpreter start, reading the data directory).
OBSERVE_S = 8.0

_attempts = itertools.count(1)


def wrong_peers(
    variant: str, node: str, right: dict[str, str], rng: random.Random
) -> dict[str, str]:
    """``right`` (this node's ``--peers``) made wrong as ``variant`` says."""
    others = sorted(n for n in right if n != node)
    if variant == "self":
        return {node: right[node]}
    victim = rng.choice(others)
    wrong = dict(right)
    if variant == "typo":
        wrong[victim + victim[-1]] = wrong.pop(victim)
    elif variant == "missing":
        del wrong[victim]
    elif variant == "extra":
        wrong["n9"] = f"http://127.0.0.1:{free_port()}"
    else:
        raise ValueError(f"unknown --peers variant {variant!r}")
    return wrong


async def inject_peers(
    name: str, cluster: ProcessCluster, node: str, rng: random.Random
) -> Injected:
    """Kill ``node`` and start it with a wrong ``--peers`` (see the module docstring)."""
    variant = rng.choice(PEERS_VARIANTS)
    right = cluster.nodes[node].peers
    wrong = wrong_peers(variant, node, right, rng)
    seen = await membership(cluster)
    # What the node recorded: the leader's configuration now (its flags' set by default).
    voters = seen[1] if seen is not None and node in seen[1] else set(right)
    added, missing = sorted(set(wrong) - voters), sorted(voters - set(wrong))
    known = frozenset(wrong) in cluster.voter_sets_seen
    await cluster.kill(node)
    stderr_path = cluster.base_dir / f"{node}.peers-{next(_attempts)}.stderr"
    cluster.start_misconfigured(node, wrong, stderr_path)
    detail = f"restart {node} with --peers {','.join(sorted(wrong))} ({variant})"
    observer: asyncio.Future[None] | None = None

    async def heal() -> None:
        if observer is not None:
            # A window shorter than the observation still gets its verdict.
            done, _ = await asyncio.wait([observer], timeout=OBSERVE_S)
            if not done:
                observer.cancel()
            await asyncio.gather(observer, return_exceptions=True)
        await cluster.kill(node)
        _append(cluster.specs[node].log_path, stderr_path)
        cluster.restart(node)

    injected = Injected(name, detail, heal)
    injected.facts.update(
        node=node, variant=variant, peers=sorted(wrong), added=added, missing=missing, known=known
    )
    observer = asyncio.ensure_future(_observe(cluster, node, stderr_path, voters, injected))
    return injected


def _append(log: Path, stderr_path: Path) -> None:
    """Keep the misconfigured incarnation's stderr in the node's log too."""
    with log.open("ab") as out:
        out.write(f"--- harness: stderr of the wrong --peers start ({stderr_path.name})\n".encode())
        out.write(_read(stderr_path).encode())


def _read(path: Path) -> str:
    """A small file written by a process that has exited (no event-loop concern)."""
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


async def _observe(
    cluster: ProcessCluster,
    node: str,
    stderr_path: Path,
    voters: set[str],
    injected: Injected,
) -> None:
    facts = injected.facts
    proc = cluster.nodes[node]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + OBSERVE_S
    status = None
    # A refusal comes before the node serves: an exit is a refusal, an answer a start.
    while proc.alive() and loop.time() < deadline:
        status = await cluster.api.status(cluster.url(node), timeout_s=0.5)
        if status is not None:
            break
        await asyncio.sleep(0.1)
    code = proc.exit_code()
    if code is not None and code < 0:
        facts.update(outcome="killed", exit_code=code)  # another nemesis got there first
        return
    if code is not None:
        text = _read(stderr_path)
        facts.update(outcome="refused", exit_code=code, stderr=text[-1500:])
        injected.detail += f": refused (exit {code})"
        unnamed = [i for i in facts["added"] + facts["missing"] if i not in text]
        if code == 0:
            facts["violation"] = f"{node} exited 0 on a wrong --peers (a refusal must fail)"
        elif unnamed:
            facts["violation"] = (
                f"{node} refused a wrong --peers but its stderr does not name {unnamed}: "
                f"{text[-300:]!r}"
            )
        return
    if status is None:
        facts.update(outcome="silent")
        facts["violation"] = f"{node} neither refused nor served within {OBSERVE_S} s"
        return
    # Let it settle (a one-voter cluster elects itself at once), then ask again.
    await asyncio.sleep(1.0)
    status = await cluster.api.status(cluster.url(node), timeout_s=1.0) or status
    members = status.get("members")
    facts.update(role=status.get("role"), term=status.get("term"))
    facts.update(outcome="started", members=members)
    injected.detail += f": started, members {members}"
    if members is not None and set(members) != voters:
        facts["violation"] = (
            f"{node} started with voters {sorted(members)} from a wrong --peers "
            f"{facts['peers']} instead of its recorded membership {sorted(voters)}"
        )
    elif not facts["known"] and facts["variant"] in ("self", "typo", "extra"):
        facts["violation"] = (
            f"{node} started on a --peers never recorded as a configuration "
            f"({facts['variant']}: {facts['peers']}); it must refuse; it is {facts['role']} "
            f"in term {facts['term']}, voters {members}"
        )
