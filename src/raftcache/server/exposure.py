"""Moved to ``raftcache.process.exposure``; kept for compatibility."""

from raftcache.process.exposure import *  # noqa: F403
