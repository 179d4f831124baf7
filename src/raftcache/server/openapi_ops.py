"""Moved to ``raftcache.server.openapi.ops``; kept for compatibility."""

from raftcache.server.openapi.ops import *  # noqa: F403
