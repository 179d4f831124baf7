"""The garbage-collector policy of a serving node process.

Rule: once a node serves (storage recovered, listeners up), ``tune()`` collects once, freezes
everything then alive (``gc.freeze``: the permanent generation, never scanned again) and
raises the thresholds, so that the collector only ever scans what was allocated since, and
rarely. Reference counting still frees almost everything at once — cache entries are ``bytes``,
log entries hold no cycles — the cyclic collector is only the safety net for cycles (asyncio
exceptions with their tracebacks, closed connections).

Why: with CPython's defaults (700, 10, 10) a loaded node ran a full collection every second or
so, each scanning the ~200 k objects of the imported libraries and the application, and each a
30-43 ms stop of the event loop on a 2-core machine: it was the p99 of durable writes
(see docs/performance.md). Frozen, the full collections scan the objects made since start —
mostly the Raft log's entries, bounded by the snapshot threshold.

Only the process entry point (``run_serve``) applies it: a test or an application that embeds
``serve_node`` keeps its own collector settings.
"""

from __future__ import annotations

import gc

#: Young-generation threshold: allocations (net of frees) between collections of generation 0.
#: CPython's 700 suits short scripts; a server allocating ~100 objects per request ran one
#: collection every few requests.
GEN0_THRESHOLD = 10_000
#: Collections of generation 0 between collections of generation 1, and of 1 between 2.
GEN1_THRESHOLD = 10
GEN2_THRESHOLD = 100

POLICIES = ("tuned", "default")


def tune(policy: str = "tuned") -> None:
    """Apply ``policy``: ``tuned`` (freeze what lives now, raise the thresholds) or
    ``default`` (leave CPython's collector as it is)."""
    if policy not in POLICIES:
        raise ValueError(f"gc policy must be one of {POLICIES}, not {policy!r}")
    if policy == "default":
        return
    gc.collect()  # do not freeze garbage
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
