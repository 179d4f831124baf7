"""One measured point: wait for an idle machine, run wrk ``reps`` times, keep the medians.

Rule: a point's figures are medians over its repetitions; its noise is the spread of ops/s
across them ((max - min) / median) together with how busy the machine was before each run. A
point is flagged ``noisy`` when the spread exceeds 10% or the machine was not idle.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.suite.machine import measure_fsync, wait_for_idle
from benchmarks.suite.settings import Settings
from benchmarks.suite.wrk import WrkJob, run_wrk

NOISY_SPREAD = 0.10


def run_once(
    job: WrkJob,
    pids: dict[str, int],
    settings: Settings,
    on_start: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """One repetition: idle wait, a short fsync probe, warm-up, measured run (JSON-ready).

    The disk is shared too: its fsync latency moves by an order of magnitude with other
    people's I/O, so each repetition records what a durable write cost just before it ran.
    """
    idle = wait_for_idle(settings.idle_busy_max, settings.idle_wait_max_s)
    fsync = measure_fsync(Path(tempfile.gettempdir()), count=30)["append_fsync"]["p50_ms"]
    result = run_wrk(job, settings.duration_s, pids, settings.warmup_s, on_start)
    return {
        **asdict(result),
        "busy_before": idle.busy,
        "load1": idle.load1,
        "idle": idle.idle,
        "fsync_p50_ms_before": fsync,
    }


def summarize(
    system: str, workload: str, connections: int, reps: list[dict[str, Any]]
) -> dict[str, Any]:
    """Medians over repetitions and the noise verdict."""

    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in reps))

    ops = [r["ops_s"] for r in reps]
    median_ops = med("ops_s")
    spread = (max(ops) - min(ops)) / median_ops if median_ops > 0 and len(ops) > 1 else 0.0
    cpu_names = sorted({name for r in reps for name in r["cpu"]})
    cpu = {n: float(statistics.median(r["cpu"].get(n, 0.0) for r in reps)) for n in cpu_names}
    busy = max(r["busy_before"] for r in reps)
    # Server CPU (every process but wrk): ops per CPU-second is comparable even when a busy
    # machine starves the servers, which throughput alone is not.
    server_cores = sum(v for k, v in cpu.items() if k != "wrk") / 100
    return {
        "system": system,
        "workload": workload,
        "connections": connections,
        "ops_s": median_ops,
        "p50_ms": med("p50_ms"),
        "p99_ms": med("p99_ms"),
        "errors": sum(r["errors"] for r in reps),
        "cpu": cpu,
        "ops_per_cpu_s": median_ops / server_cores if server_cores > 0 else 0.0,
        "spread": spread,
        "busy_before_max": busy,
        "noisy": spread > NOISY_SPREAD or not all(r["idle"] for r in reps),
        "reps": reps,
    }
