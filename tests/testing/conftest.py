"""Hooks for the test-tool tests.

Rule: tests here leak nothing — no event loops, sockets or tasks — since warnings are errors.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, Any, Any]:
    """Keep looptime from creating (and leaking) an event loop for synchronous tests.

    looptime 0.9 asks the policy of pytest-asyncio's autouse ``event_loop_policy`` fixture for
    its loop in every test, sync ones included; with no loop set, that creates one nobody
    closes, and its ``ResourceWarning`` fails a later test. A sync test has no loop to
    time-travel, so the fixture is hidden from looptime's hook during the call. (The same hook
    lives in tests/network/conftest.py; it belongs in tests/conftest.py, which is not ours.)
    """
    funcargs = pyfuncitem.funcargs
    # pytest-asyncio marks every async test (auto mode).
    is_async = pyfuncitem.get_closest_marker("asyncio") is not None
    if is_async or "event_loop_policy" not in funcargs:
        return (yield)
    policy = funcargs.pop("event_loop_policy")
    try:
        return (yield)
    finally:
        funcargs["event_loop_policy"] = policy
