"""The cluster configuration under its first name: ``raftcache.protocol.configuration``
re-exported.

Rule: nothing is defined here; see ``raftcache.protocol``.
"""

from __future__ import annotations

from raftcache.protocol.configuration import FORMAT_VERSION, Configuration

__all__ = ["FORMAT_VERSION", "Configuration"]
