"""What the machine is and what it is doing: /proc readings, the idle wait, fsync cost.

Rule: every figure comes straight from the kernel (``/proc/stat``, ``/proc/<pid>/stat``,
``/proc/<pid>/status``, ``/proc/loadavg``) or from a timed syscall, so the report can say how
busy the machine was around each point instead of assuming it was idle.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (all its threads) has used; 0 once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name may contain spaces: fields start after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cpu_totals() -> tuple[int, int]:
    """(busy, total) jiffies over all cores from /proc/stat."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(x) for x in parts]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


def busy_share(window_s: float = 1.0) -> float:
    """Share (0–1) of all cores busy during the next ``window_s`` seconds."""
    b0, t0 = _cpu_totals()
    time.sleep(window_s)
    b1, t1 = _cpu_totals()
    return (b1 - b0) / max(t1 - t0, 1)


def load_average() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


@dataclass(frozen=True, slots=True)
class IdleReading:
    """How busy the machine was just before a point, and how long we waited for it."""

    busy: float
    load1: float
    waited_s: float
    idle: bool


def wait_for_idle(busy_max: float, wait_max_s: float) -> IdleReading:
    """Sample 1-s windows until fewer than ``busy_max`` of the cores are busy, or give up.

    The machine is shared (other people's test suites), so the wait is bounded: a point taken
    on a busy machine is still taken, but its reading says so and the report flags it.
    """
    started = time.monotonic()
    while True:
        busy = busy_share(1.0)
        waited = time.monotonic() - started
        if busy <= busy_max or waited >= wait_max_s:
            return IdleReading(busy, load_average(), waited, busy <= busy_max)


def _summary_ms(samples: list[float]) -> dict[str, float]:
    samples = sorted(samples)
    return {
        "count": len(samples),
        "p50_ms": statistics.median(samples),
        "p99_ms": samples[min(len(samples) - 1, int(0.99 * len(samples)))],
        "mean_ms": statistics.fmean(samples),
    }


def measure_fsync(directory: Path, count: int = 300) -> dict[str, dict[str, float]]:
    """Latency (ms) of durably writing 100 B on ``directory``'s filesystem, two ways.

    ``append_fsync``: append to a growing file, then fsync — what raftcache's FileStorage does
    (the size changes, so the filesystem journal commits metadata too). ``prealloc_fdatasync``:
    overwrite inside a preallocated file, then fdatasync — what etcd's WAL does (segments
    preallocated, no size change, no metadata to flush). Samples alternate between the two so a
    neighbour's I/O burst hits both alike.
    """
    fd_a, path_a = tempfile.mkstemp(dir=directory, prefix="fsync-append-")
    fd_p, path_p = tempfile.mkstemp(dir=directory, prefix="fsync-prealloc-")
    append: list[float] = []
    prealloc: list[float] = []
    try:
        os.posix_fallocate(fd_p, 0, count * 100 + 4096)
        os.fsync(fd_p)
        for i in range(count):
            t0 = time.perf_counter()
            os.write(fd_a, b"x" * 100)
            os.fsync(fd_a)
            append.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            os.pwrite(fd_p, b"x" * 100, i * 100)
            os.fdatasync(fd_p)
            prealloc.append((time.perf_counter() - t0) * 1000)
    finally:
        for fd, path in ((fd_a, path_a), (fd_p, path_p)):
            os.close(fd)
            os.unlink(path)
    return {"append_fsync": _summary_ms(append), "prealloc_fdatasync": _summary_ms(prealloc)}


def _first_line(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "missing"
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=10)
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def machine_info(python: str) -> dict[str, object]:
    """The machine and the versions of everything measured, for the report header."""
    version = subprocess.run(
        [python, "-c", "import pysyncobj.version as v; print(v.VERSION)"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "mem_gib": round(_mem_total_gib(), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "etcd": _first_line(["etcd", "--version"]),
        "wrk": _first_line(["wrk", "--version"]),
        "pysyncobj": version or "missing",
        "load1_at_start": load_average(),
    }


def source_info() -> dict[str, str]:
    """Which raftcache tree the stores run (the one ``python -m raftcache`` imports here):
    its path and, in a git work tree, the commit and whether ``src`` differs from it. A tree
    exported with ``git archive`` has no history: ``BENCH_SOURCE_REV`` names its commit."""
    import importlib.util

    spec = importlib.util.find_spec("raftcache")
    origin = spec.origin if spec is not None and spec.origin else ""
    src = Path(origin).resolve().parent.parent if origin else Path.cwd()
    info = {"path": str(src), "commit": os.environ.get("BENCH_SOURCE_REV", "unknown")}
    git = ["git", "-C", str(src)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0 and "BENCH_SOURCE_REV" not in os.environ:
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "."], capture_output=True, text=True
        ).stdout.strip()
        info["commit"] = head.stdout.strip() + (" + uncommitted changes" if dirty else "")
    return info
