"""Building blocks of the benchmark run: settings, processes, machine probes, wrk, reports.

Rule: only the suite's own orchestration lives here; it drives real processes and reads
``/proc``, so it is a composition root and may read clocks directly.
"""
