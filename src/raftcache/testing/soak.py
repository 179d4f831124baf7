"""``python -m raftcache.testing.soak``: a long fault-injection run with a summary table.

Rule: this is a composition root — the only place of the harness that reads the real clock
(the event loop's monotonic time) and picks a seed when none is given; everything below takes
them as arguments. It exits 0 when the run found no violation, 1 otherwise, so ``make soak``
fails loudly. The run directory (node logs and data, histories, ``report.json``) is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from raftcache.testing.campaign import RunConfig, run_campaign
from raftcache.testing.clocks import find_libfaketime
from raftcache.testing.nemesis import ALL_NEMESES, CLOCK_NEMESES
from raftcache.testing.report import print_report

__all__ = ["main"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m raftcache.testing.soak",
        description="Run real raftcache nodes under injected faults and check what clients saw.",
    )
    parser.add_argument("--seconds", type=float, default=600.0, help="faulty phase length")
    parser.add_argument("--nodes", type=int, default=3, help="cluster size (3 or 5)")
    parser.add_argument("--seed", type=int, default=None, help="schedule seed (default: random)")
    parser.add_argument(
        "--nemeses",
        default=",".join(ALL_NEMESES),
        help=f"comma-separated faults to draw from (default: all of {','.join(ALL_NEMESES)})",
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="run directory (default: a new temp dir)"
    )
    parser.add_argument(
        "--clock",
        choices=("auto", "on", "off"),
        default="auto",
        help="add clock-jump faults (libfaketime; auto: when it is installed)",
    )
    parser.add_argument("--check-budget", type=float, default=120.0, help="seconds per search")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    run_dir = args.dir or Path(tempfile.mkdtemp(prefix=f"raftcache-soak-{seed}-"))
    nemeses = tuple(n for n in args.nemeses.split(",") if n)
    if args.clock == "on" or (args.clock == "auto" and find_libfaketime() is not None):
        nemeses += tuple(n for n in CLOCK_NEMESES if n not in nemeses)
    config = RunConfig(
        nodes=args.nodes,
        duration_s=args.seconds,
        seed=seed,
        nemeses=nemeses,
        check_budget_s=args.check_budget,
    )
    print(
        f"soak: {config.nodes} nodes, {config.duration_s:.0f} s of faults, seed {seed}, "
        f"nemeses {','.join(config.nemeses)}, run directory {run_dir}",
        flush=True,
    )
    report = asyncio.run(run_campaign(config, run_dir))
    print_report(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
