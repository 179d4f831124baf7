"""Moved to ``raftcache.process.serve``; kept for compatibility."""

from raftcache.process.serve import *  # noqa: F403
