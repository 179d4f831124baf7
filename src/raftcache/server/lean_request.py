"""Moved to ``raftcache.server.lean.request``; kept for compatibility."""

from raftcache.server.lean.request import *  # noqa: F403
