"""Hooks for the test-tool tests.

Rule: tests here leak nothing — no event loops, sockets or tasks — since warnings are errors.
"""

from __future__ import annotations
