"""A default ``--max-bytes`` from the container's memory limit (cgroup v2 or v1).

Rule: only ``raftcache serve`` with ``--max-bytes`` unset asks, once at start; with no cgroup
memory limit (none set, or not in a container) the answer is None and nothing changes. Replicas
hold the same data, so an unbounded cache under a memory limit gets every replica OOM-killed at
about the same moment; a bound derived from the limit evicts instead.

The fraction is ``DEFAULT_SHARE`` (25 %), not half: ``max_bytes`` counts key and value bytes,
and a node's memory per counted byte is far above one — 273–346 B of RSS per key of 113 counted
bytes with 100-byte values (docs/performance.md, "Memory"), ≈ 50 MiB for the interpreter and
libraries, the Raft log until a snapshot compacts it, the snapshot being written. At 25 % a node
full of small values sits near 75 % of its limit; large values cost closer to their size and
leave more room. (A follower installing a snapshot briefly holds two caches: see docs/deploying.md.)

Eviction runs on every replica as it applies a write, so the replicas of a group must share one
bound (docs/sharding.md, "Budgets"): a derived bound is the same only where every replica has
the same memory limit — a StatefulSet's pods do; the log line says so, and the Kubernetes
manifests set ``--max-bytes`` explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "CGROUP_ROOT",
    "DEFAULT_SHARE",
    "MemoryLimit",
    "cgroup_memory_limit",
    "default_max_bytes",
]

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP: Final = Path("/proc/self/cgroup")
#: The share of the memory limit given to the cache's counted bytes (see the module rule).
DEFAULT_SHARE: Final = 0.25
#: cgroup v1 writes "no limit" as the largest page-aligned int64 (9223372036854771712); any value
#: this large is no limit a machine has.
_NO_LIMIT_ABOVE: Final = 1 << 60
_MIB: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class MemoryLimit:
    """A cgroup memory limit: its bytes and the file it was read from."""

    bytes: int
    source: Path


def cgroup_memory_limit(
    root: Path = CGROUP_ROOT, self_cgroup: Path = PROC_SELF_CGROUP
) -> MemoryLimit | None:
    """The tightest memory limit over this process's cgroup and its ancestors, or None.

    cgroup v2: ``<root>/<path>/memory.max`` (``max`` = none), the path from the ``0::`` line of
    ``self_cgroup``; v1: ``<root>/memory/<path>/memory.limit_in_bytes``, the path from the line
    naming the ``memory`` controller. Inside a container the path is usually ``/`` (a cgroup
    namespace) or not mounted, so the mount's top directory is read too. Unreadable or
    malformed files count as no limit: a default must never stop a node from starting.
    """
    paths = _cgroup_paths(self_cgroup)
    found: list[MemoryLimit] = []
    for base, name, path in (
        (root, "memory.max", paths.get("")),
        (root / "memory", "memory.limit_in_bytes", paths.get("memory")),
    ):
        for directory in _with_ancestors(base, path):
            limit = _read_limit(directory / name)
            if limit is not None:
                found.append(limit)
    return min(found, key=lambda limit: limit.bytes, default=None)


def default_max_bytes(limit: int, share: float = DEFAULT_SHARE) -> int:
    """``share`` of ``limit``, rounded down to a whole MiB (at least 1 MiB)."""
    return max(_MIB, int(limit * share) // _MIB * _MIB)


def _cgroup_paths(self_cgroup: Path) -> dict[str, str]:
    """Controller → path from ``/proc/self/cgroup`` (v2's unified line under ``""``)."""
    try:
        text = self_cgroup.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _with_ancestors(base: Path, path: str | None) -> list[Path]:
    """``base/path``, each of its parents up to ``base``, and ``base`` itself."""
    found = [base]
    if path:
        current = base
        for part in Path(path).parts:
            if part in ("/", "", ".", ".."):
                continue
            current = current / part
            found.append(current)
    return found


def _read_limit(file: Path) -> MemoryLimit | None:
    try:
        raw = file.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    if not raw.isdigit():  # "max" (v2: no limit), or not a number at all
        return None
    value = int(raw)
    if value <= 0 or value >= _NO_LIMIT_ABOVE:
        return None
    return MemoryLimit(value, file)
