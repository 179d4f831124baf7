"""Store-level faults for the simulated multi-group clusters, and their seeds.

Rule: a fault acts on a store — every group it hosts at once — as real faults do: a partition
between two stores, an isolated store, a crashed store (its storages kept), each healed (and the
crashed store restarted) before the next. ``tests/raft/test_multigroup.py`` (raw Raft groups)
and ``tests/store/test_store_sim.py`` (the ``Store`` class) share it, and the recording of one
client operation (``recorded``).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any

from raftcache.network.hub import InMemoryHub
from raftcache.raft.errors import NotLeaderError, ProposalDroppedError
from raftcache.testing.history import HistoryRecorder

#: Errors that say a write certainly did not happen; anything else may have been applied.
WRITE_NOT_DONE = (NotLeaderError, ProposalDroppedError)
#: Errors that say a read was refused (no answer given).
READ_REFUSED = (NotLeaderError,)


async def recorded(
    rec: HistoryRecorder,
    process: int,
    kind: str,
    key: Hashable,
    value: Any,
    run: Callable[[], Awaitable[Any]],
    refused: tuple[type[BaseException], ...],
) -> bool | None:
    """Invoke ``kind`` on ``key`` in ``rec``, run it, and record what ``run`` returned (ok),
    a ``refused`` error (failed) or any other error (indeterminate). True: ok, False: failed,
    None: indeterminate (the process must not invoke again: its operation may still land)."""
    op = rec.invoke(process, kind, key, value)
    try:
        output = await run()
    except refused as exc:
        rec.fail(op, repr(exc))
        return False
    except Exception as exc:
        rec.indeterminate(op, repr(exc))
        return None
    rec.ok(op, output)
    return True


def sweep_seeds(default: int) -> list[int]:
    """``RAFTCACHE_SEED`` alone, else ``RAFTCACHE_SWEEP_SEEDS`` (or ``default``) seeds: a test
    using it is marked ``sweep``, and ``make sweep SEEDS=N`` runs it over N."""
    if "RAFTCACHE_SEED" in os.environ:
        return [int(os.environ["RAFTCACHE_SEED"])]
    return list(range(int(os.environ.get("RAFTCACHE_SWEEP_SEEDS", default))))


async def store_faults(
    rng: random.Random,
    steps: int,
    stores: Sequence[str],
    hub: InMemoryHub,
    *,
    crash: Callable[[str], Awaitable[None]],
    restart_crashed: Callable[[], Awaitable[None]],
    counts: Counter[str],
) -> None:
    """``steps`` faults, each held 0.3–1 s after 0.3–0.8 s of calm, then healed."""
    for _ in range(steps):
        await asyncio.sleep(rng.uniform(0.3, 0.8))
        action = rng.choice(["partition", "isolate", "crash"])
        a, b = rng.sample(list(stores), 2)
        if action == "partition":
            hub.partition(a, b)
        elif action == "isolate":
            hub.isolate(a)
        else:
            await crash(a)
        counts[action] += 1
        await asyncio.sleep(rng.uniform(0.3, 1.0))
        hub.heal_all()
        await restart_crashed()
