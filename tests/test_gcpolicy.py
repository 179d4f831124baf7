"""The serve process's collector policy (``raftcache.process.gcpolicy``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from raftcache.process import gcpolicy


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_gc")
def test_tuned_freezes_what_lives_and_raises_the_thresholds() -> None:
    gc.unfreeze()
    alive = [[i] for i in range(1000)]  # container objects the collector tracks
    gcpolicy.tune("tuned")
    assert gc.get_freeze_count() >= len(alive)
    assert gc.get_threshold() == (
        gcpolicy.GEN0_THRESHOLD,
        gcpolicy.GEN1_THRESHOLD,
        gcpolicy.GEN2_THRESHOLD,
    )
    # Cycles made after the freeze are still collected.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1


@pytest.mark.usefixtures("restore_gc")
def test_default_leaves_the_collector_alone() -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    gcpolicy.tune("default")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="gc policy"):
        gcpolicy.tune("off")
