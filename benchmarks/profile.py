"""Profile the raftcache leader with py-spy under the durable-write and linearizable-read loads.

Rule: the same cluster and wrk load as ``make bench`` (3 real ``raftcache serve`` processes,
fsync on, 64 connections), with ``py-spy record --format raw`` attached to the leader for the
duration; the collapsed stacks go to ``benchmarks/results/profile-<workload>.txt`` and a
summary of the hottest functions (self and inclusive share of samples, line numbers folded)
to ``profile-<workload>.md``. Run: ``python -m benchmarks.profile`` (``BENCH_DURATION``);
``--summarize`` only rewrites the summaries from the stacks already recorded.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.suite.procs import ProcessGroup, install_signal_handlers
from benchmarks.suite.raftcache_cluster import RaftcacheCluster
from benchmarks.suite.settings import from_env
from benchmarks.suite.workloads import Shape
from benchmarks.suite.wrk import run_wrk

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")


def fold(frame: str) -> str:
    """``func (path/file.py:123)`` → ``func (file.py)``: aggregate a function's lines."""
    frame = _FRAME_LINE.sub(")", frame)
    return re.sub(r"\((?:.*/)?([^/()]+)\)$", r"(\1)", frame)


def summarize(raw: str, top: int = 25) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(total samples, hottest self frames, hottest inclusive frames) of py-spy raw output."""
    self_counts: collections.Counter[str] = collections.Counter()
    incl_counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        count = int(m["count"])
        # Without --threads/--subprocesses, every entry is a frame, outermost first.
        frames = [fold(f) for f in m["stack"].split(";")]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for f in set(frames):
            incl_counts[f] += count
    return total, self_counts.most_common(top), incl_counts.most_common(top)


def report(workload: str, raw: str) -> str:
    total, self_top, incl_top = summarize(raw)
    lines = [f"# py-spy: raftcache leader under {workload}, 64 connections", ""]
    lines.append(f"{total} samples (all threads, idle excluded).")
    for title, rows in (("self", self_top), ("inclusive", incl_top)):
        lines += ["", f"## Top {title}", "", "| % | samples | function |", "|--:|--:|---|"]
        lines += [f"| {100 * n / max(total, 1):.1f} | {n} | `{f}` |" for f, n in rows]
    return "\n".join(lines) + "\n"


def resummarize(out_dir: Path) -> None:
    """Rewrite each ``profile-*.md`` from its raw stacks, keeping the load line of the run."""
    for raw_path in sorted(out_dir.glob("profile-*.txt")):
        md_path = raw_path.with_suffix(".md")
        old = md_path.read_text() if md_path.exists() else ""
        load = old[old.find("\nLoad during the profile") :] if "Load during" in old else ""
        workload = raw_path.stem.removeprefix("profile-")
        md_path.write_text(report(workload, raw_path.read_text()) + load)


def main() -> int:
    install_signal_handlers()
    settings = from_env()
    if "--summarize" in sys.argv:
        resummarize(settings.results_dir)
        return 0
    if shutil.which("py-spy") is None and not Path(sys.executable).with_name("py-spy").exists():
        print("py-spy missing: make bench-deps", file=sys.stderr)
        return 2
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out_dir = settings.results_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="raftcache-profile-"))
    shape = Shape(settings.keys, settings.value_size, settings.read_ratio)
    try:
        with ProcessGroup() as group:
            cluster = RaftcacheCluster(group, sys.executable, work, 3, tag="prof")
            cluster.start()
            cluster.prefill(shape)
            for workload in ("write", "read-linearizable"):
                name = workload.replace("/", "-")
                raw_path = out_dir / f"profile-{name}.txt"
                spy = group.start(
                    [
                        pyspy,
                        "record",
                        "--pid",
                        str(cluster.pids()["leader"]),
                        "--rate",
                        "200",
                        "--duration",
                        str(round(settings.duration_s)),
                        "--format",
                        "raw",
                        "--nonblocking",
                        "--output",
                        str(raw_path),
                    ],
                    log_path=work / "py-spy.log",
                )
                time.sleep(1.0)  # py-spy attaches
                result = run_wrk(
                    cluster.job(workload, 64, shape), settings.duration_s, cluster.pids()
                )
                spy.wait(60)
                md = report(workload, raw_path.read_text())
                md += (
                    f"\nLoad during the profile: {result.ops_s:,.0f} ops/s, p50 "
                    f"{result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, leader CPU "
                    f"{result.cpu['leader']:.0f}% (py-spy sampling overhead included).\n"
                )
                (out_dir / f"profile-{name}.md").write_text(md)
                print(md)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("BENCH_DURATION", "10")
    sys.exit(main())
