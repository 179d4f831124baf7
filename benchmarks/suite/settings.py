"""Benchmark settings from the environment.

Rule: every knob has a default taken from issue 5 (10 s per point, 3 repetitions, 1/16/64
connections, 100-byte values over 10,000 keys, 1 M keys for restart and memory);
``BENCH_QUICK=1`` shrinks everything for a smoke run of a few minutes. Nothing else reads the
environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

ALL_SECTIONS = ("floor", "http", "scale", "restart", "inproc", "scaling")
ALL_WORKLOADS = ("write", "read-linearizable", "read-stale", "mix-90/10")
#: Extra raftcache series (``BENCH_RAFT_TRANSPORT``): the same cluster with another Raft wire.
RAFT_SERIES: dict[str, tuple[str, ...]] = {
    "stream": ("--raft-transport", "stream"),
    "msgpack": ("--raft-wire", "msgpack"),
}


def _env_float(name: str, default: float) -> float:
    text = os.environ.get(name, "")
    return float(text) if text else default


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    return int(text) if text else default


def _env_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    text = os.environ.get(name, "")
    return tuple(x.strip() for x in text.split(",") if x.strip()) if text else default


@dataclass(frozen=True, slots=True)
class Settings:
    """What one ``make bench`` run measures and for how long."""

    quick: bool
    duration_s: float
    reps: int
    warmup_s: float
    connections: tuple[int, ...]
    scale_connections: tuple[int, ...]
    keys: int = 10_000
    value_size: int = 100
    read_ratio: float = 0.9
    restart_keys: int = 1_000_000
    #: Idle-machine wait before each point: busy share of all cores to wait for, and the bound.
    idle_busy_max: float = 0.25
    idle_wait_max_s: float = 10.0
    #: In-process comparison: length of one rate probe and of the low-load latency run.
    probe_s: float = 5.0
    bisect_steps: int = 4
    sections: tuple[str, ...] = ALL_SECTIONS
    #: Workloads of the ``http`` section (``BENCH_WORKLOADS``; e.g. only the durable writes).
    workloads: tuple[str, ...] = ALL_WORKLOADS
    results_dir: Path = field(default_factory=lambda: Path("benchmarks/results"))
    wrk_threads_max: int = 2
    #: Extra raftcache series besides the default (HTTP/JSON) one: names of ``RAFT_SERIES``.
    raft_series: tuple[str, ...] = ()
    #: The ``scaling`` section (``benchmarks/scaling.py``): data groups G of each cluster of
    #: 3 stores, seconds per point, warm-up, repetitions and connections. Its own, shorter
    #: than the side-by-side points', so the section stays within about 2 minutes.
    scaling_groups: tuple[int, ...] = (1, 2, 4, 16)
    scaling_duration_s: float = 6.0
    scaling_warmup_s: float = 1.0
    scaling_reps: int = 1
    scaling_connections: int = 64
    #: Connections per group of the ``direct, per group`` rows (G × this many in all; 0: no
    #: such rows): the load each group sees held up as G grows, so that what a group costs
    #: shows apart from the batching lost by splitting the same clients G ways.
    scaling_conns_per_group: int = 32

    @property
    def point_count(self) -> int:
        """Wrk points of a full run (for the progress bar)."""
        n = 0
        if "floor" in self.sections:
            n += len(self.connections)
        systems = 2 + len(self.raft_series)
        if "http" in self.sections:
            n += systems * len(self.workloads) * len(self.connections)
        if "scale" in self.sections:
            n += systems * len(self.scale_connections)
        return n * self.reps


def from_env() -> Settings:
    """Read ``BENCH_*`` variables (see ``benchmarks/README.md``)."""
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    sections = _env_list("BENCH_SECTIONS", ALL_SECTIONS)
    unknown = set(sections) - set(ALL_SECTIONS)
    if unknown:
        raise SystemExit(f"BENCH_SECTIONS: unknown {sorted(unknown)}; known {ALL_SECTIONS}")
    conns = tuple(int(x) for x in _env_list("BENCH_CONNECTIONS", ("1", "16", "64")))
    workloads = _env_list("BENCH_WORKLOADS", ALL_WORKLOADS)
    if set(workloads) - set(ALL_WORKLOADS):
        raise SystemExit(f"BENCH_WORKLOADS: unknown {workloads}; known {ALL_WORKLOADS}")
    series = _env_list("BENCH_RAFT_TRANSPORT", ())
    if set(series) - set(RAFT_SERIES):
        raise SystemExit(f"BENCH_RAFT_TRANSPORT: unknown {series}; known {tuple(RAFT_SERIES)}")
    return Settings(
        quick=quick,
        duration_s=_env_float("BENCH_DURATION", 2.0 if quick else 10.0),
        reps=_env_int("BENCH_REPS", 1 if quick else 3),
        warmup_s=_env_float("BENCH_WARMUP", 0.5 if quick else 2.0),
        connections=conns,
        scale_connections=(64,) if quick else (16, 64),
        restart_keys=_env_int("BENCH_RESTART_KEYS", 100_000 if quick else 1_000_000),
        idle_busy_max=_env_float("BENCH_IDLE_BUSY", 0.25),
        idle_wait_max_s=_env_float("BENCH_IDLE_WAIT", 3.0 if quick else 10.0),
        probe_s=_env_float("BENCH_PROBE", 1.5 if quick else 5.0),
        bisect_steps=_env_int("BENCH_BISECT", 1 if quick else 4),
        sections=sections,
        workloads=workloads,
        raft_series=series,
        scaling_groups=tuple(
            int(x) for x in _env_list("BENCH_SCALING_GROUPS", ("1", "2", "4", "16"))
        ),
        scaling_duration_s=_env_float("BENCH_SCALING_DURATION", 3.0 if quick else 6.0),
        scaling_warmup_s=_env_float("BENCH_SCALING_WARMUP", 0.5 if quick else 1.0),
        scaling_reps=_env_int("BENCH_SCALING_REPS", 1),
        scaling_connections=_env_int("BENCH_SCALING_CONNS", 64),
        scaling_conns_per_group=_env_int("BENCH_SCALING_CONNS_PER_GROUP", 32),
        results_dir=Path(os.environ.get("BENCH_OUT", "benchmarks/results")),
    )
