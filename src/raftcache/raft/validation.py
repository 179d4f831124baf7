"""Structural checks of inbound Raft requests under their first name:
``raftcache.protocol.validation`` re-exported.

Rule: nothing is defined here; see ``raftcache.protocol``.
"""

from __future__ import annotations

from raftcache.protocol.validation import (
    InvalidMessageError,
    validate_batch,
    validate_message,
    validate_request,
)

__all__ = ["InvalidMessageError", "validate_batch", "validate_message", "validate_request"]
