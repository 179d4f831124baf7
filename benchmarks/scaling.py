"""``make bench-scaling``: the ``scaling`` section of ``make bench`` alone (about 2 minutes).

Rule: the same measurement as the suite's section (``suite/scaling.py``: durable writes over
G = 1, 2, 4, 16 data groups on 3 stores pinned to cores, through the group leaders and through any
store), with the suite's machine description, written to ``results/scaling.{json,md}`` —
never to ``latest.*``, which only ``make bench`` writes. The G = 1 figures are compared with
the side-by-side ``write`` point of the last full run in ``results/latest.json``.
``BENCH_SCALING_GROUPS`` (1,2,4,16), ``BENCH_SCALING_DURATION`` (6), ``BENCH_SCALING_WARMUP`` (1),
``BENCH_SCALING_REPS`` (1), ``BENCH_SCALING_CONNS`` (64) and ``BENCH_OUT`` from the
environment.
"""

from __future__ import annotations

import datetime
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.suite import scaling
from benchmarks.suite.machine import machine_info, source_info
from benchmarks.suite.procs import ProcessGroup, install_signal_handlers
from benchmarks.suite.settings import from_env


def header(machine: dict[str, Any], date: str) -> list[str]:
    source = machine.get("source") or {}
    return [
        f"Run {date}. Machine: {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['mem_gib']} GiB, Linux {machine['kernel']}, Python {machine['python']}; "
        f"{machine['wrk']}; load 1 min at start {machine['load1_at_start']:.2f}. "
        f"raftcache at {source.get('commit', 'unknown')}.",
        "",
    ]


def main() -> int:
    install_signal_handlers()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            print(f"missing {tool}: run `make bench-deps`", file=sys.stderr)
            return 2
    settings = from_env()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = {**machine_info(sys.executable), "source": source_info()}
    work = Path(tempfile.mkdtemp(prefix="raftcache-scaling-"))

    def tick(text: str) -> None:
        print(f"… {text}", file=sys.stderr, flush=True)

    try:
        with ProcessGroup() as group:
            result = scaling.scaling_section(group, sys.executable, work, settings, tick)
    except (KeyboardInterrupt, SystemExit):
        print("interrupted: every started process was stopped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    latest = settings.results_dir / "latest.json"
    reference, ref_date = None, ""
    if latest.exists():
        last = json.loads(latest.read_text())
        reference = scaling.reference_point(last["points"], settings.scaling_connections)
        ref_date = f" in the last full run ({last['date']}, `latest.json`)"
    md = "\n".join(
        [
            "# raftcache scaling over data groups",
            "",
            *header(machine, date),
            *scaling.markdown(result, reference, ref_date),
        ]
    )
    out = settings.results_dir
    out.mkdir(parents=True, exist_ok=True)
    payload = {"date": date, "machine": machine, "scaling": result}
    (out / "scaling.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    (out / "scaling.md").write_text(md)
    print(md)
    print(f"written: {out}/scaling.json, scaling.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
