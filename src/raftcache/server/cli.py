"""Moved to ``raftcache.process.cli``; kept for compatibility."""

from raftcache.process.cli import *  # noqa: F403
