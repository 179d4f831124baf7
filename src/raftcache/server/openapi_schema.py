"""Moved to ``raftcache.server.openapi.schema``; kept for compatibility."""

from raftcache.server.openapi.schema import *  # noqa: F403
