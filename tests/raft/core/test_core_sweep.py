"""A seeded sweep of random adversarial schedules over the pure core (see ``schedule.py``).

Rule: a schedule is a function of its seed alone, so a failure is replayed exactly with
``RAFTCACHE_SEED=N pytest tests/raft/core/test_core_sweep.py -k "sweep and not long"``.
``make test`` runs a fixed block of seeds; ``make sweep`` (``-m slow``) runs
``RAFTCACHE_SWEEP_SEEDS`` more, longer ones, starting after that block.
"""

from __future__ import annotations

import os

import pytest

from tests.raft.core.schedule import run_schedule

#: Seeds and steps per seed in ``make test`` (about 10 s; the state machine takes about 20 s).
FAST_SEEDS = 300
FAST_STEPS = 1000
SLOW_STEPS = 2000


def _run(seed: int, steps: int) -> None:
    try:
        run_schedule(seed, steps)
    except AssertionError as exc:
        raise AssertionError(
            f"schedule seed {seed} ({steps} steps) failed: {exc}\n"
            f"replay: RAFTCACHE_SEED={seed} RAFTCACHE_STEPS={steps} "
            f'.venv/bin/python -m pytest tests/raft/core/test_core_sweep.py -k "sweep and not long"'
        ) from exc


def _seeds_from_env() -> list[int] | None:
    seed = os.environ.get("RAFTCACHE_SEED")
    return [int(seed)] if seed else None


def test_sweep_random_schedules() -> None:
    seeds = _seeds_from_env() or list(range(FAST_SEEDS))
    steps = int(os.environ.get("RAFTCACHE_STEPS", FAST_STEPS))
    for seed in seeds:
        _run(seed, steps)


@pytest.mark.slow
def test_sweep_random_schedules_long() -> None:
    count = int(os.environ.get("RAFTCACHE_SWEEP_SEEDS", "500"))
    steps = int(os.environ.get("RAFTCACHE_STEPS", SLOW_STEPS))
    seeds = _seeds_from_env() or list(range(FAST_SEEDS, FAST_SEEDS + count))
    for seed in seeds:
        _run(seed, steps)
