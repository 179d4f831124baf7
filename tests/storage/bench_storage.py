"""Throughput of FileStorage's hot path: append a batch, sync, repeat (not a pytest test).

Run: ``.venv/bin/python -m tests.storage.bench_storage [--dir DIR] [--seconds S]``.
Reports appended entries/s and syncs/s for 100-byte entries in batches of 1, 10 and 100, with
real fsyncs and without (the latter is the CPU cost of encoding and writing alone).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

from raftcache.raft.messages import LogEntry
from raftcache.storage import FileStorage


def run(directory: str, batch: int, seconds: float, *, fsync: bool) -> tuple[float, float]:
    shutil.rmtree(directory, ignore_errors=True)
    storage = FileStorage(directory, fsync=fsync)
    storage.load()
    payload = b"v" * 100
    index, syncs = 1, 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        storage.append([LogEntry(1, i, payload) for i in range(index, index + batch)])
        storage.sync()
        index += batch
        syncs += 1
    elapsed = time.perf_counter() - start
    storage.close()
    shutil.rmtree(directory, ignore_errors=True)
    return (index - 1) / elapsed, syncs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default=None, help="parent directory (default: system temp)")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    parent = tempfile.mkdtemp(prefix="raftcache-bench-", dir=args.dir)
    print(f"directory: {parent}")
    print(f"{'fsync':>6} {'batch':>6} {'entries/s':>12} {'syncs/s':>10}")
    for fsync in (True, False):
        for batch in (1, 10, 100):
            entries, syncs = run(f"{parent}/d", batch, args.seconds, fsync=fsync)
            print(f"{fsync!s:>6} {batch:>6} {entries:>12,.0f} {syncs:>10,.0f}")
    shutil.rmtree(parent, ignore_errors=True)


if __name__ == "__main__":
    main()
