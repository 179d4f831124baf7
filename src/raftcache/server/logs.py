"""Moved to ``raftcache.process.logs``; kept for compatibility."""

from raftcache.process.logs import *  # noqa: F403
