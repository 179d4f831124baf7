"""Moved to ``raftcache.server.lean.routes``; kept for compatibility."""

from raftcache.server.lean.routes import *  # noqa: F403
