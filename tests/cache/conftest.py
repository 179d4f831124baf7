"""Hooks for the cache tests.

Rule: tests here leak no event loop. looptime 0.9 creates (and leaks) a loop for synchronous
tests via pytest-asyncio's ``event_loop_policy`` fixture; its ``ResourceWarning`` then fails a
later test (warnings are errors). Same workaround as ``tests/network/conftest.py`` — it belongs
in ``tests/conftest.py`` for the whole suite (reported to the lead).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, Any, Any]:
    """Hide the loop-policy fixture from looptime's hook while a synchronous test runs."""
    funcargs = pyfuncitem.funcargs
    is_async = pyfuncitem.get_closest_marker("asyncio") is not None
    if is_async or "event_loop_policy" not in funcargs:
        return (yield)
    policy = funcargs.pop("event_loop_policy")
    try:
        return (yield)
    finally:
        funcargs["event_loop_policy"] = policy
