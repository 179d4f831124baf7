"""Quorum arithmetic: what a majority of a configuration's voters agrees on (§5.2, §5.3, §6.4).

Rule: only voters count, each once; a learner or a node outside the configuration never helps
make a quorum. These are pure functions over a ``Configuration`` and one value per voter, so the
core's election, commit and read rules share one definition of "a quorum has it".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from raftcache.protocol.configuration import Configuration


def vote_result(conf: Configuration, votes: Mapping[str, bool]) -> bool | None:
    """True once a quorum of voters granted, False once so many refused that no quorum can
    grant any more, None while undecided. Votes of non-voters are ignored."""
    granted = sum(1 for v, ok in votes.items() if ok and v in conf.voters)
    rejected = sum(1 for v, ok in votes.items() if not ok and v in conf.voters)
    if granted >= conf.quorum():
        return True
    if rejected > len(conf.voters) - conf.quorum():
        return False
    return None


def quorum_value(conf: Configuration, value_of: Callable[[str], int]) -> int:
    """The highest value that at least a quorum of voters has reached (``value_of`` gives each
    voter's: a match index for the commit rule, an acknowledged round for ReadIndex); 0 when
    the configuration has no voters."""
    values = sorted(value_of(v) for v in conf.voters)
    if not values:
        return 0
    return values[len(values) - conf.quorum()]


def quorum_reached(conf: Configuration, has: Callable[[str], bool]) -> bool:
    """Whether at least a quorum of voters satisfies ``has`` (check-quorum's activity test)."""
    return sum(1 for v in conf.voters if has(v)) >= conf.quorum()
