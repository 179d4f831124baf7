"""Profile the raftcache leader with py-spy under the durable-write and linearizable-read loads.

Rule: the same cluster and wrk load as ``make bench`` (3 real ``raftcache serve`` processes,
fsync on, 64 connections), with ``py-spy record --format raw`` attached to the leader for the
duration; the collapsed stacks go to ``benchmarks/results/profile-<workload>.txt`` and a
summary of the hottest functions (self and inclusive share of samples, line numbers folded)
to ``profile-<workload>.md``. Run: ``python -m benchmarks.profile`` (``BENCH_DURATION``);
``--summarize`` only rewrites the summaries from the stacks already recorded.

``--inproc [RATE]`` profiles the in-process comparison's leader instead (3 ``raftcache_inproc``
nodes, FileStorage with fsync, proposals straight into ``RaftNode.propose`` at RATE per second,
default 10,000, open loop): every thread is sampled (``--threads``), so the persist thread's
share shows apart from the event loop's; output ``profile-inproc.{txt,md}``.
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
        # Every entry is a frame, outermost first (with --threads, a thread's name first).
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


def _pyspy_argv(pyspy: str, pid: int, seconds: float, out: Path, *extra: str) -> list[str]:
    return [
        pyspy,
        "record",
        "--pid",
        str(pid),
        "--rate",
        "200",
        "--duration",
        str(round(seconds)),
        "--format",
        "raw",
        "--nonblocking",
        *extra,
        "--output",
        str(out),
    ]


def profile_inproc(pyspy: str, out_dir: Path, rate: float, seconds: float) -> None:
    """py-spy on the in-process driver (the leader) under an open-loop proposal rate."""
    from benchmarks.suite.inproc import InprocCluster, raftcache_argv

    work = Path(tempfile.mkdtemp(prefix="raftcache-profile-inproc-"))
    raw_path = out_dir / "profile-inproc.txt"
    try:
        with ProcessGroup() as group:
            cluster = InprocCluster(group, "raftcache", raftcache_argv(sys.executable, True), work)
            try:
                if not cluster.wait_leader() and not cluster.restart():
                    raise SystemExit("the driver did not become leader")
                cluster.command({"op": "latency", "duration": 1.0}, 30)  # warm-up
                spy = group.start(
                    _pyspy_argv(pyspy, cluster.procs[0].pid, seconds - 1, raw_path, "--threads"),
                    log_path=work / "py-spy.log",
                )
                cmd = {"op": "rate", "rate": rate, "duration": seconds, "timeout": 1.0}
                result = cluster.timed(cmd, seconds + 40)
                spy.wait(60)
            finally:
                cluster.stop()
        md = report(f"in-process proposals at {rate:,.0f}/s", raw_path.read_text())
        md += (
            f"\nLoad during the profile: {result['committed_per_s']:,.0f} committed/s of "
            f"{rate:,.0f}/s offered (success {result['success']:.1%}), p50 "
            f"{result['p50_ms']:.2f} ms, leader CPU {result['cpu']['node1']:.0f}% "
            "(py-spy sampling overhead included).\n"
        )
        (out_dir / "profile-inproc.md").write_text(md)
        print(md)
    finally:
        shutil.rmtree(work, ignore_errors=True)


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
    if "--inproc" in sys.argv:
        at = sys.argv.index("--inproc") + 1
        rate = float(sys.argv[at]) if at < len(sys.argv) else 10_000.0
        profile_inproc(pyspy, out_dir, rate, max(settings.duration_s, 4.0))
        return 0
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
                    _pyspy_argv(pyspy, cluster.pids()["leader"], settings.duration_s, raw_path),
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
