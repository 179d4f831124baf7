"""A short A/B probe of the write path: 3 in-process raftcache nodes, driven through the API.

Rule: one command, a few seconds, the same steps every time, so that two checkouts (before and
after a change) can be compared back to back on a shared machine: low-load commit latency (one
proposal in flight), RPCs the leader sent per proposal, then open-loop probes at fixed rates
(committed within 1 s, and whether the driver still leads afterwards). Figures go to stdout as
one JSON line per step; nothing is asserted. Take differences of a few percent as noise.

Run from the checkout to measure:
``python -m benchmarks.ab_inproc [--seconds 3] [--rates 8000,16000,32000] [--no-fsync]
[--wire json|msgpack] [--transport http|stream] [--gc tuned|default]
[--set RAFTCONFIG_FIELD=VALUE ...]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.suite.inproc import InprocCluster, raftcache_argv
from benchmarks.suite.procs import ProcessGroup


def _rpcs_per_proposal(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    proposed = max(1, int(after["proposed"]) - int(before["proposed"]))
    kinds = set(before["rpcs_sent"]) | set(after["rpcs_sent"])
    return {
        k: round((after["rpcs_sent"].get(k, 0) - before["rpcs_sent"].get(k, 0)) / proposed, 2)
        for k in sorted(kinds)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rates", default="8000,16000,32000")
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--wire", choices=("json", "msgpack"), default="json")
    parser.add_argument("--transport", choices=("http", "stream"), default="http")
    parser.add_argument("--gc", choices=("tuned", "default"), default="tuned")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="a RaftConfig field"
    )
    args = parser.parse_args()
    base = raftcache_argv(sys.executable, not args.no_fsync)

    def argv(i: int, ports: list[int], data: Path) -> list[str]:
        extra = [arg for item in args.set for arg in ("--set", item)]
        wire = ["--wire", args.wire, "--transport", args.transport, "--gc", args.gc]
        return [*base(i, ports, data), *wire, *extra]

    def emit(step: str, result: dict[str, Any]) -> None:
        print(json.dumps({"step": step, **result}), flush=True)

    with tempfile.TemporaryDirectory(prefix="ab-inproc-") as tmp, ProcessGroup() as group:
        cluster = InprocCluster(group, "raftcache", argv, Path(tmp))
        try:
            if not cluster.wait_leader() and not cluster.restart():
                raise SystemExit("the driver did not become leader")
            cluster.command({"op": "latency", "duration": 1.0}, 30)  # warm-up
            before = cluster.command({"op": "stats"}, 10)
            low = cluster.timed({"op": "latency", "duration": args.seconds}, args.seconds + 30)
            after = cluster.command({"op": "stats"}, 10)
            low["rpcs_per_proposal"] = _rpcs_per_proposal(before, after)
            emit("low-load", low)
            for rate in (float(r) for r in args.rates.split(",") if r):
                before = cluster.command({"op": "stats"}, 10)
                cmd = {"op": "rate", "rate": rate, "duration": args.seconds, "timeout": 1.0}
                result = cluster.timed(cmd, args.seconds + 40)
                after = cluster.command({"op": "stats"}, 10)
                result["rpcs_per_proposal"] = _rpcs_per_proposal(before, after)
                result["rpcs_failed"] = {
                    k: v - before["rpcs_failed"].get(k, 0) for k, v in after["rpcs_failed"].items()
                }
                result["leadership_lost"] = result.get("role") != "leader"
                emit(f"rate-{int(rate)}", result)
                if result["leadership_lost"] and not cluster.restart():
                    raise SystemExit("no leader after a restart")
                time.sleep(0.5)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
