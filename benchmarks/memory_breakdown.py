"""Where a node's bytes go: the cache state machine loaded with N keys, structure by structure.

Rule: measure, don't guess. The machine is built as ``raftcache serve`` builds it (a
``WatchHistory`` with serve's defaults) and loaded the way the benchmark's ``restart`` section
loads a cluster — ``BATCH`` entries of 1,000 sets, keys ``k0000000``… — so the figures explain
that section's RSS. Each structure is sized from the objects themselves (``sys.getsizeof``
rounded up to pymalloc's 16-byte size classes, which is what an object really occupies), and the
process RSS before and after is printed next to the sum, so nothing big can hide.

``--ttl-share`` gives that fraction of the keys a TTL (the expiry index), ``--churn`` then
overwrites that many random existing keys (what a dict whose insertion order is the LRU order
does under overwrites and touches), ``--ops`` times ``get``/``SET`` per operation.

    python -m benchmarks.memory_breakdown --keys 1000000 [--ttl-share 0.5] [--churn 1000000]

It prints one JSON object (bytes per key for each structure, MiB totals, µs per op).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from raftcache.cache.commands import SetOp, encode_batch, encode_set
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.watch import WatchHistory

BATCH = 1000
NOW = 1_000_000.0


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def occupied(obj: object) -> int:
    """Bytes an object really takes: small ones sit in pymalloc's 16-byte size classes."""
    size = sys.getsizeof(obj)
    return (size + 15) // 16 * 16 if size <= 512 else size


def _sum(objs: Iterable[object]) -> int:
    return sum(occupied(o) for o in objs)


def _entry_bytes(entry: object) -> int:
    """An expiry index entry: a tuple also boxes its float (its key is the dict's own)."""
    return occupied(entry) + (occupied(entry[0]) if isinstance(entry, tuple) else 0)


def sorted_list_bytes(sl: Any) -> int:
    """A ``SortedList``: its sublists, their maxima and its positional index (not items)."""
    return (
        occupied(sl)
        + occupied(sl._lists)
        + _sum(sl._lists)
        + occupied(sl._maxes)
        + occupied(sl._index)
    )


def load(machine: CacheStateMachine, keys: int, ttl_share: float, value: bytes) -> int:
    """Apply ``keys`` sets in batches of 1,000; returns the bytes of the commands (what the
    Raft log holds in memory until a snapshot compacts it) and leaves the last index used."""
    log_bytes = 0
    rng = random.Random(1)
    for index, start in enumerate(range(0, keys, BATCH), start=1):
        ops = [
            SetOp(f"k{i:07d}", value, ttl=3600.0 if rng.random() < ttl_share else None)
            for i in range(start, min(keys, start + BATCH))
        ]
        command = encode_batch(ops, now=NOW)
        log_bytes += len(command)
        machine.apply_entry(index, command)
    return log_bytes


def churn(machine: CacheStateMachine, keys: int, writes: int, value: bytes) -> None:
    rng = random.Random(2)
    index = machine.last_index
    for start in range(0, writes, BATCH):
        ops = [
            SetOp(f"k{rng.randrange(keys):07d}", value) for _ in range(min(BATCH, writes - start))
        ]
        index += 1
        machine.apply_entry(index, encode_batch(ops, now=NOW))


def breakdown(machine: CacheStateMachine) -> dict[str, int]:
    """Bytes held by each structure of the machine (shared objects counted once)."""
    store: Any = machine._store  # a measuring tool looks inside
    records: dict[str, bytes] = store._records
    # The ExpiryIndex's SortedList of bytes (older trees: a SortedList of (float, key) tuples).
    expiry = getattr(store._by_expiry, "_entries", store._by_expiry)
    dict_keys = {id(k) for k in records}  # an index key that is not one of these is a copy
    history: Any = machine.watch_history
    batches = history._entries[history._head :] if history else []
    return {
        "key objects": _sum(records),
        "records (header + value)": _sum(records.values()),
        "dict table": sys.getsizeof(records),
        "sorted key index": sorted_list_bytes(store._keys),
        "key objects only the sorted index holds": _sum(
            k for k in store._keys if id(k) not in dict_keys
        ),
        "expiry index": sorted_list_bytes(expiry) + sum(map(_entry_bytes, expiry)),
        "watch history (changes)": sum(occupied(b) + _sum(b) for b in batches),
        "sessions": len(machine._sessions),  # count (none in this load)
    }


def time_ops(machine: CacheStateMachine, keys: int, ops: int, value: bytes) -> dict[str, float]:
    """µs per local ``get`` and per applied single-key SET (decode + apply), without and with
    a TTL, on the loaded machine; the median of 5 rounds."""
    rng = random.Random(3)
    names = [f"k{rng.randrange(keys):07d}" for _ in range(ops)]
    plain = [encode_set(name, value, now=NOW) for name in names]
    with_ttl = [encode_set(name, value, ttl=3600.0, now=NOW) for name in names]
    rounds: dict[str, list[float]] = {"get_us": [], "set_us": [], "set_ttl_us": []}
    index = machine.last_index
    for _ in range(5):
        t0 = time.perf_counter()
        for name in names:
            machine.get(name, NOW)
        rounds["get_us"].append((time.perf_counter() - t0) / ops * 1e6)
        for label, commands in (("set_us", plain), ("set_ttl_us", with_ttl)):
            t0 = time.perf_counter()
            for command in commands:
                index += 1
                machine.apply_entry(index, command)
            rounds[label].append((time.perf_counter() - t0) / ops * 1e6)
    return {label: round(sorted(values)[2], 2) for label, values in rounds.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--ttl-share", type=float, default=0.0)
    parser.add_argument("--churn", type=int, default=0)
    parser.add_argument("--ops", type=int, default=100_000)
    args = parser.parse_args(argv)
    import raftcache.server.app  # noqa: F401 - a node's imports, for a comparable baseline

    value = b"v" * args.value_size
    gc.collect()
    rss_empty = rss_mib()
    machine = CacheStateMachine(watch=WatchHistory())
    t0 = time.perf_counter()
    log_bytes = load(machine, args.keys, args.ttl_share, value)
    load_s = time.perf_counter() - t0
    churn(machine, args.keys, args.churn, value)
    gc.collect()
    rss_loaded = rss_mib()
    parts = breakdown(machine)
    sessions = parts.pop("sessions")
    total = sum(parts.values())
    out: dict[str, Any] = {
        "keys": args.keys,
        "value_size": args.value_size,
        "ttl_share": args.ttl_share,
        "churn": args.churn,
        "python": sys.version.split()[0],
        "load_s": round(load_s, 2),
        "bytes_per_key": {name: round(size / args.keys, 1) for name, size in parts.items()},
        "structures_mib": round(total / 2**20, 1),
        "rss_empty_mib": round(rss_empty, 1),
        "rss_loaded_mib": round(rss_loaded, 1),
        "rss_growth_per_key": round((rss_loaded - rss_empty) * 2**20 / args.keys, 1),
        "sessions": sessions,
        "raft_log_commands_mib": round(log_bytes / 2**20, 1),
    }
    if args.ops:
        out.update(time_ops(machine, args.keys, args.ops, value))
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
