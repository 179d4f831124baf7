"""Moved to ``raftcache.server.lean.front``; kept for compatibility."""

from raftcache.server.lean.front import *  # noqa: F403
