"""``python -m raftcache.testing.soak``: a long fault-injection run with a summary table.

Rule: this is a composition root — the only place of the harness that reads the real clock
(the event loop's monotonic time) and picks a seed when none is given; everything below takes
them as arguments. It exits 0 when the run found no violation, 1 otherwise, so ``make soak``
fails loudly. The run directory (node logs and data, histories, ``report.json``) is kept.

``--nemeses`` takes names (any of ``nemesis.FAMILIES``) and the shorthands ``all`` (the default
mix) and ``lease`` (``nemesis.LEASE_NEMESES``: transfers, adversarial transfers, clock drift,
wrong ``--peers``, partitions, kills, pauses). ``--clock`` adds clock *jumps*, which exempt
lease reads from the strict check; a lease soak runs with ``--clock off``, so every
``consistency=lease`` read is checked strictly (drift inside the bound exempts nothing).
Without libfaketime the drift nemeses are left out, with a note.
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
from raftcache.testing.nemesis import ALL_NEMESES, CLOCK_NEMESES, DRIFT_NEMESES, LEASE_NEMESES
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
        help=f"comma-separated faults to draw from, or 'all' / 'lease' "
        f"(default: all = {','.join(ALL_NEMESES)}; lease = {','.join(LEASE_NEMESES)})",
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
    parser.add_argument("--mix-ratio", type=float, default=0.3, help="windows mixing 2 faults")
    parser.add_argument(
        "--lease-ratio", type=float, default=0.2, help="share of general reads sent as lease"
    )
    parser.add_argument(
        "--lease-readers", type=int, default=1, help="lease-only readers pinned to each node"
    )
    parser.add_argument("--pinned-writers", type=int, default=1, help="writers pinned to each node")
    parser.add_argument(
        "--node-python",
        default="",
        help="interpreter the nodes run (e.g. a wrapper setting PYTHONPATH to another tree)",
    )
    return parser.parse_args(argv)


def expand(names: str) -> tuple[str, ...]:
    """``--nemeses``: names and the shorthands ``all`` and ``lease``, without duplicates."""
    found: list[str] = []
    for name in (n for n in names.split(",") if n):
        group = {"all": ALL_NEMESES, "lease": LEASE_NEMESES}.get(name, (name,))
        found += [n for n in group if n not in found]
    return tuple(found)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    run_dir = args.dir or Path(tempfile.mkdtemp(prefix=f"raftcache-soak-{seed}-"))
    nemeses = expand(args.nemeses)
    if args.clock == "on" or (args.clock == "auto" and find_libfaketime() is not None):
        nemeses += tuple(n for n in CLOCK_NEMESES if n not in nemeses)
    if find_libfaketime() is None and set(nemeses) & set(DRIFT_NEMESES):
        print("soak: libfaketime is not installed: clock-drift nemeses left out", flush=True)
        nemeses = tuple(n for n in nemeses if n not in DRIFT_NEMESES)
    config = RunConfig(
        nodes=args.nodes,
        duration_s=args.seconds,
        seed=seed,
        nemeses=nemeses,
        check_budget_s=args.check_budget,
        mix_ratio=args.mix_ratio,
        lease_ratio=args.lease_ratio,
        lease_readers=args.lease_readers,
        pinned_writers=args.pinned_writers,
        python=args.node_python,
    )
    print(
        f"soak: {config.nodes} nodes, {config.duration_s:.0f} s of faults, seed {seed}, "
        f"nemeses {','.join(config.nemeses)}, lease reads strict: "
        f"{not set(config.nemeses) & set(CLOCK_NEMESES)}, run directory {run_dir}",
        flush=True,
    )
    report = asyncio.run(run_campaign(config, run_dir))
    print_report(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
