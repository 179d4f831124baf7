"""Test tools shipped with raftcache: histories, a linearizability checker, a fault proxy.

Rule: these tools observe and perturb a cluster from the outside only — they import nothing of
raftcache beyond this package, so a harness can point them at real processes, and a bug in the
system under test can never leak into the judge.
"""

from __future__ import annotations

from raftcache.testing.checkers import CounterCheck, SetCheck, check_counter, check_set
from raftcache.testing.fault_proxy import FaultProxy, ProxyMode, ProxyStats
from raftcache.testing.history import (
    HistoryRecorder,
    Operation,
    OpStatus,
    PendingOp,
    history_from_json,
    history_to_json,
    load_history,
    save_history,
)
from raftcache.testing.linearizability import (
    CheckResult,
    Outcome,
    PartitionResult,
    check_linearizable,
    partition_by_key,
)
from raftcache.testing.mesh import ProxyMesh
from raftcache.testing.models import CounterModel, Model, RegisterModel

__all__ = [
    "CheckResult",
    "CounterCheck",
    "CounterModel",
    "FaultProxy",
    "HistoryRecorder",
    "Model",
    "OpStatus",
    "Operation",
    "Outcome",
    "PartitionResult",
    "PendingOp",
    "ProxyMesh",
    "ProxyMode",
    "ProxyStats",
    "RegisterModel",
    "SetCheck",
    "check_counter",
    "check_linearizable",
    "check_set",
    "history_from_json",
    "history_to_json",
    "load_history",
    "partition_by_key",
    "save_history",
]
