"""The fault proxy and the mesh of them under one import path, the one callers were promised.

Rule: nothing is defined here. ``FaultProxy`` (with ``ProxyMode`` and ``ProxyStats``) lives in
``raftcache.testing.fault_proxy``, and ``ProxyMesh`` in ``raftcache.testing.mesh``, which builds
on it; neither imports this module, so there is no cycle to hide.
"""

from __future__ import annotations

from raftcache.testing.fault_proxy import FaultProxy, ProxyMode, ProxyStats
from raftcache.testing.mesh import ProxyMesh

__all__ = ["FaultProxy", "ProxyMesh", "ProxyMode", "ProxyStats"]
