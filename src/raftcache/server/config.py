"""Moved to ``raftcache.process.config``; kept for compatibility."""

from raftcache.process.config import *  # noqa: F403
