"""Sharding: the cluster map of many Raft groups and where their replicas go.

Rule: everything here is pure — values and functions of them, no I/O, no clock, no asyncio — so
the meta group's state machine, the placement driver, the stores and the CLI all compute the
same answers from the same map. The keyspace itself (slots, hash tags) is ``raftcache.slots``.
See docs/sharding.md.
"""

from raftcache.sharding.clustermap import ClusterMap, GroupPlacement, Store, StoreState
from raftcache.sharding.placement import Step, StepKind, apply_step, plan

__all__ = [
    "ClusterMap",
    "GroupPlacement",
    "Step",
    "StepKind",
    "Store",
    "StoreState",
    "apply_step",
    "plan",
]
