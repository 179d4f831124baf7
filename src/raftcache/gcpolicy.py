"""Moved to ``raftcache.process.gcpolicy``; kept for compatibility."""

from raftcache.process.gcpolicy import *  # noqa: F403
