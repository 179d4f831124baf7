"""Moved to ``raftcache.server.lean.wire``; kept for compatibility."""

from raftcache.server.lean.wire import *  # noqa: F403
