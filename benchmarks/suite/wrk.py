"""Running wrk for one point and reading its result, with the CPU of every process meanwhile.

Rule: one load generator for every HTTP system — wrk with the Lua scripts in
``benchmarks/lua`` — so the systems differ only in what answers. A point is a warm-up run
(discarded) and a measured run; CPU per process is the difference of ``/proc/<pid>/stat``
times across the measured run, in percent of one core.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.suite.machine import cpu_seconds

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One measured wrk run."""

    ops_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    errors: int
    duration_s: float
    #: CPU of each named process during the run, in % of one core ("wrk" included).
    cpu: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WrkJob:
    """What to run: the URL of the node to load, a script, its arguments, connections (and
    environment variables the script reads, e.g. ``scaling.lua``'s plan file)."""

    url: str
    script: str
    args: Sequence[str]
    connections: int
    threads_max: int = 2
    env: Mapping[str, str] = field(default_factory=dict)
    #: Cores wrk is pinned to (``taskset -c``); empty: wherever the kernel puts it.
    cores: Sequence[int] = ()


def _argv(job: WrkJob, duration_s: float) -> list[str]:
    threads = max(1, min(job.threads_max, job.connections))
    pin = ["taskset", "-c", ",".join(str(c) for c in job.cores)] if job.cores else []
    return [
        *pin,
        "wrk",
        f"-t{threads}",
        f"-c{job.connections}",
        f"-d{max(1, round(duration_s))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_DIR / job.script),
        job.url,
        "--",
        *job.args,
    ]


def parse_output(text: str) -> dict[str, object]:
    """The BENCH_JSON object printed by ``report.lua``'s ``done()``."""
    for line in text.splitlines():
        if line.startswith("BENCH_JSON "):
            parsed: dict[str, object] = json.loads(line[len("BENCH_JSON ") :])
            return parsed
    raise RuntimeError(f"wrk printed no BENCH_JSON line:\n{text[-2000:]}")


def _to_result(raw: Mapping[str, object], cpu: dict[str, float]) -> WrkResult:
    lat = raw["latency_us"]
    errs = raw["errors"]
    assert isinstance(lat, dict)
    assert isinstance(errs, dict)
    requests = int(str(raw["requests"]))
    duration_s = int(str(raw["duration_us"])) / 1e6
    errors = sum(int(v) for v in errs.values())
    ok = max(0, requests - int(errs["status"]))
    return WrkResult(
        ops_s=ok / duration_s if duration_s > 0 else 0.0,
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000,
        requests=requests,
        errors=errors,
        duration_s=duration_s,
        cpu=cpu,
    )


def run_wrk(
    job: WrkJob,
    duration_s: float,
    pids: Mapping[str, int],
    warmup_s: float = 0.0,
    on_start: Callable[[], object] | None = None,
) -> WrkResult:
    """Warm up (if asked), then run wrk for ``duration_s`` and sample CPU of ``pids`` + wrk.
    ``on_start`` is called after the warm-up, just before the measured run starts (to read a
    counter over the measured run only)."""
    env = {"BENCH_LUA_DIR": str(LUA_DIR), **job.env}
    if warmup_s > 0:
        subprocess.run(
            _argv(job, warmup_s), capture_output=True, env=_env(env), check=False, timeout=120
        )
    if on_start is not None:
        on_start()
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        _argv(job, duration_s),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_env(env),
    )
    try:
        # wrk's own CPU is read just before it exits: sample near the end of its run.
        time.sleep(max(0.0, duration_s - 0.3))
        wrk_cpu = cpu_seconds(proc.pid)
        out, _ = proc.communicate(timeout=duration_s + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    elapsed = time.monotonic() - t0
    cpu = {name: 100 * (cpu_seconds(pid) - before[name]) / elapsed for name, pid in pids.items()}
    cpu["wrk"] = 100 * wrk_cpu / max(elapsed - 0.3, 1e-3)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited {proc.returncode}: {out.decode(errors='replace')}")
    return _to_result(parse_output(out.decode(errors="replace")), cpu)


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **extra}
