"""Hooks for the cache tests.

Rule: tests here leak no event loop. looptime 0.9 creates (and leaks) a loop for synchronous
tests via pytest-asyncio's ``event_loop_policy`` fixture; its ``ResourceWarning`` then fails a
later test (warnings are errors). Same workaround as ``tests/network/conftest.py`` — it belongs
in ``tests/conftest.py`` for the whole suite (reported to the lead).
"""

from __future__ import annotations
