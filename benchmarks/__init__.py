"""raftcache's side-by-side benchmark suite (``make bench``); never part of ``make test``."""
