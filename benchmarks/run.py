"""``make bench``: raftcache side by side with etcd, PySyncObj and a bare HTTP floor.

Rule: one command measures everything on this machine in one run, then writes
``benchmarks/results/latest.{json,md,png}``. Every process it starts belongs to a
``ProcessGroup`` and is stopped on the way out — also on Ctrl-C, SIGTERM or an error; all
traffic stays on 127.0.0.1. Settings come from ``BENCH_*`` variables (``suite/settings.py``).
Sections: ``floor`` (aiohttp fixed 200), ``http`` (raftcache-3 vs etcd-3, four workloads),
``scale`` (5 nodes, writes), ``restart`` (memory and restart with many keys), ``inproc``
(replicated writes through each library's Python API, vs PySyncObj), ``scaling`` (writes over
G = 1, 2, 4 data groups on 3 stores pinned to cores; alone: ``make bench-scaling``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks.suite import inproc, report, scaling, sections
from benchmarks.suite.machine import machine_info, measure_fsync
from benchmarks.suite.procs import ProcessGroup, install_signal_handlers
from benchmarks.suite.settings import ALL_SECTIONS, Settings, from_env

INPROC_STEPS = 3


def _preflight(console: Console) -> None:
    missing = [tool for tool in ("wrk", "etcd") if shutil.which(tool) is None]
    if missing:
        console.print(
            f"[red]missing {', '.join(missing)}: run `make bench-deps` (apt-get install "
            "etcd-server wrk)[/red]"
        )
        raise SystemExit(2)


def _run_inproc(
    group: ProcessGroup, python: str, work: Path, s: Settings, tick: Any
) -> list[dict[str, Any]]:
    libraries = [
        (
            "raftcache-fsync",
            inproc.raftcache_argv(python, fsync=True),
            "FileStorage, fsync per batch",
        ),
        (
            "raftcache-nofsync",
            inproc.raftcache_argv(python, fsync=False),
            "FileStorage(fsync=False): like PySyncObj's journal",
        ),
        ("pysyncobj", inproc.pysyncobj_argv(python), "journal file (mmap, never fsync'd)"),
    ]
    if "stream" in s.raft_series:
        libraries.insert(
            1,
            (
                "raftcache-fsync-stream",
                inproc.raftcache_argv(python, fsync=True, transport="stream"),
                "FileStorage, fsync per batch; StreamNetwork",
            ),
        )
    out = []
    for label, argv_for, note in libraries:
        tick(f"in-process: {label}")

        def on_probe(result: dict[str, Any], label: str = label) -> None:
            tick(
                f"in-process: {label} {result['rate']:,.0f}/s → {100 * result['success']:.1f}%",
                advance=0,
            )

        outcome = inproc.run_library(
            group, label, argv_for, work, s.probe_s, s.bisect_steps, on_probe
        )
        out.append({**dataclasses.asdict(outcome), "note": note})
    return out


def run(settings: Settings, console: Console) -> dict[str, Any]:
    python = sys.executable
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": _settings_dict(settings),
        "machine": machine_info(python),
        "points": [],
        "errors": [],
    }
    work = Path(tempfile.mkdtemp(prefix="raftcache-bench-"))
    try:
        results["fsync"] = measure_fsync(work)
        fa, fp = results["fsync"]["append_fsync"], results["fsync"]["prealloc_fdatasync"]
        console.print(
            f"durable 100 B write here: append+fsync p50 {fa['p50_ms']:.2f} ms p99 "
            f"{fa['p99_ms']:.2f} ms; preallocated+fdatasync p50 {fp['p50_ms']:.2f} ms p99 "
            f"{fp['p99_ms']:.2f} ms (work dir {work})"
        )
        _run_sections(settings, python, work, results, console)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["rows"] = report.comparison_rows(results["points"])
    results["targets"] = report.targets(results)
    return results


def _run_sections(
    settings: Settings, python: str, work: Path, results: dict[str, Any], console: Console
) -> None:
    """Run each selected section under one progress bar; a failed section is recorded."""
    total = (
        settings.point_count
        + (INPROC_STEPS if "inproc" in settings.sections else 0)
        + (3 if "restart" in settings.sections else 0)
        + (scaling.point_count(settings) if "scaling" in settings.sections else 0)
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress, ProcessGroup() as group:
        task = progress.add_task("starting", total=total)

        def tick(text: str, advance: int = 1) -> None:
            progress.update(task, description=text[:60])
            progress.advance(task, advance)

        def section(name: str, fn: Any) -> Any:
            if name not in settings.sections:
                return None
            try:
                return fn()
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                console.print(f"[red]section {name} failed: {exc}[/red]")
                results["errors"].append({"section": name, "error": traceback.format_exc()})
                return None

        args = (group, python, work, settings, tick)
        results["points"] += section("floor", lambda: sections.floor_section(*args)) or []
        results["points"] += (
            section("http", lambda: sections.http_section(*args, workloads=settings.workloads))
            or []
        )
        results["points"] += (
            section(
                "scale",
                lambda: sections.http_section(
                    *args, nodes=5, workloads=("write",), connections=settings.scale_connections
                ),
            )
            or []
        )
        results["restart"] = section("restart", lambda: sections.restart_section(*args))
        results["inproc"] = section(
            "inproc", lambda: _run_inproc(group, python, work, settings, tick)
        )
        results["scaling"] = section("scaling", lambda: scaling.scaling_section(*args))


def _settings_dict(settings: Settings) -> dict[str, Any]:
    return {
        name: (str(v) if isinstance(v := getattr(settings, name), Path) else v)
        for name in settings.__slots__
    }


BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def update_doc(doc: Path, md: str) -> bool:
    """Replace the block between the bench markers of ``doc`` with the latest tables."""
    if not doc.exists():
        return False
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        return False
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    # The report's own title becomes a sub-heading under the doc's section.
    body = md.replace("# raftcache benchmark — ", "### Latest run — ", 1).replace(
        "\n## ", "\n#### "
    )
    doc.write_text(f"{head}{BEGIN}\n{body}{END}{tail}")
    return True


def merge_into_latest(new: dict[str, Any], latest: Path) -> dict[str, Any]:
    """``BENCH_MERGE=1``: lay a partial run over the last full one (its points override the
    same system/workload/connections; its restart, in-process and scaling sections replace the
    old)."""
    if not latest.exists():
        return new
    base: dict[str, Any] = json.loads(latest.read_text())
    keys = {(p["system"], p["workload"], p["connections"]) for p in new["points"]}
    kept = [p for p in base["points"] if (p["system"], p["workload"], p["connections"]) not in keys]
    base["points"] = kept + new["points"]
    for section in ("restart", "inproc", "scaling"):
        if new.get(section):
            base[section] = new[section]
    base["errors"] = base.get("errors", []) + new["errors"]
    sections = ",".join(new["settings"]["sections"])
    base.setdefault("merged", []).append({"date": new["date"], "sections": sections})
    base["rows"] = report.comparison_rows(base["points"])
    base["targets"] = report.targets(base)
    return base


def write_outputs(results: dict[str, Any], out_dir: Path, console: Console) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    md = report.markdown(results)
    (out_dir / "latest.md").write_text(md)
    try:
        from benchmarks.suite.plot import plot

        plot(results, out_dir / "latest.png")
    except ImportError as exc:
        console.print(
            f"[yellow]no plot ({exc}); pip install -r benchmarks/requirements.txt[/yellow]"
        )
    console.print(md, markup=False, highlight=False)
    # Only a full run of every section refreshes the documented table.
    settings = results["settings"]
    full = not settings["quick"] and len(settings["sections"]) == len(ALL_SECTIONS)
    if full and update_doc(Path("docs/performance.md"), md):
        console.print("updated docs/performance.md")
    console.print(f"written: {out_dir}/latest.json, latest.md, latest.png")


def main() -> int:
    install_signal_handlers()
    console = Console(stderr=True)
    _preflight(console)
    settings = from_env()
    try:
        results = run(settings, console)
    except (KeyboardInterrupt, SystemExit) as exc:
        console.print("[yellow]interrupted: every started process was stopped[/yellow]")
        return exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 130
    if os.environ.get("BENCH_MERGE", "") not in ("", "0"):
        results = merge_into_latest(results, settings.results_dir / "latest.json")
    write_outputs(results, settings.results_dir, console)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
