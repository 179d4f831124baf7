"""Moved to ``raftcache.server.lean.protocol``; kept for compatibility."""

from raftcache.server.lean.protocol import *  # noqa: F403
