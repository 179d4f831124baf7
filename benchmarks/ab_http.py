"""A short A/B probe of the HTTP path: raftcache clusters with different ``serve`` flags, one wrk.

Rule: every variant is a real cluster of ``raftcache serve`` processes (durable data directories,
fsync on), all up at once and prefilled with the benchmark's 10,000 keys; each point runs the
variants back to back, alternating their order every repetition, so a burst of other load lands
on all of them. Figures go to stdout, one line per run (ops/s, p50, p99, CPU % of a core per
process: leader/followers/wrk); nothing is asserted. Take a few percent as noise.

Run: ``python -m benchmarks.ab_http 'LABEL:--flag value ...' ...`` with ``CONNS=1,64``,
``WL=write,read-linearizable``, ``DUR=8`` (seconds per run), ``REPS=2`` and ``NODES=3`` from the
environment, e.g.
``CONNS=64 python -m benchmarks.ab_http "default:" "stream:--raft-transport stream"``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from benchmarks.suite.procs import ProcessGroup, install_signal_handlers
from benchmarks.suite.raftcache_cluster import RaftcacheCluster
from benchmarks.suite.workloads import Shape
from benchmarks.suite.wrk import run_wrk


def main() -> int:
    install_signal_handlers()
    if len(sys.argv) < 2 or any(":" not in a for a in sys.argv[1:]):
        print(__doc__, file=sys.stderr)
        return 2
    conns = [int(c) for c in os.environ.get("CONNS", "1,64").split(",")]
    workloads = os.environ.get("WL", "write").split(",")
    duration = float(os.environ.get("DUR", "8"))
    reps = int(os.environ.get("REPS", "2"))
    nodes = int(os.environ.get("NODES", "3"))
    shape = Shape(10_000, 100, 0.9)
    specs = [arg.split(":", 1) for arg in sys.argv[1:]]
    with ProcessGroup() as group:
        clusters: list[tuple[str, RaftcacheCluster]] = []
        for label, flags in specs:
            work = Path(tempfile.mkdtemp(prefix=f"ab-http-{label}-"))
            cluster = RaftcacheCluster(
                group, sys.executable, work, nodes, tag=label, extra_args=flags.split()
            )
            cluster.start()
            cluster.prefill(shape)
            clusters.append((label, cluster))
        for workload in workloads:
            for n in conns:
                for rep in range(reps):
                    for label, cluster in clusters if rep % 2 == 0 else clusters[::-1]:
                        res = run_wrk(cluster.job(workload, n, shape), duration, cluster.pids())
                        cpu = "/".join(f"{v:.0f}" for v in res.cpu.values())
                        print(
                            f"{workload:18s} c={n:3d} {label:12s} {res.ops_s:8.0f}/s "
                            f"p50 {res.p50_ms:6.2f} p99 {res.p99_ms:7.2f} cpu {cpu}",
                            flush=True,
                        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
