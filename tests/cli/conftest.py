"""Helpers for CLI tests: run ``raftcache`` in-process the way a user runs it."""

from __future__ import annotations

from collections.abc import Sequence

from raftcache.cli.main import main

__all__ = ["cli"]


def cli(argv: Sequence[str]) -> int:
    """Run ``main(argv)`` and return its exit code."""
    return main(list(argv))
