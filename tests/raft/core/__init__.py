"""Synchronous tests of the pure Raft core over a lockstep in-memory network."""
