"""Shared test configuration: Hypothesis profiles, the looptime event-loop leak guard, and a
bytecode cache for the Python processes the tests start."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Generator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, Any, Any]:
    """Keep looptime from creating (and leaking) an event loop for synchronous tests.

    looptime 0.9 asks the policy of pytest-asyncio's autouse ``event_loop_policy`` fixture for
    its loop in every test, sync ones included; when no loop was ever set, that call creates
    one which nobody closes, and its ``ResourceWarning`` later fails an unrelated test (warnings
    are errors here). A sync test has no loop to time-travel, so we hide the fixture from
    looptime's hook for the duration of the call; the test itself never receives it.
    """
    funcargs = pyfuncitem.funcargs
    # pytest-asyncio marks every async test (auto mode) and replaces its .obj by a sync wrapper.
    is_async = pyfuncitem.get_closest_marker("asyncio") is not None
    if is_async or "event_loop_policy" not in funcargs:
        return (yield)
    policy = funcargs.pop("event_loop_policy")
    try:
        return (yield)
    finally:
        funcargs["event_loop_policy"] = policy


#: The bytecode directory of the session's child processes (see ``pytest_configure``).
_CHILD_PYCACHE: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """Give the Python processes the tests start (nodes, CLI runs) a bytecode cache.

    With ``PYTHONDONTWRITEBYTECODE`` set (as in some sandboxes and CI images) every
    ``raftcache serve`` the suite starts — hundreds — compiles the package from source again:
    a third of a node's start-up CPU, before its first election. The children get a cache
    in a directory of this session instead (``PYTHONPYCACHEPREFIX``), so the source tree
    stays as clean as the variable asked; this process keeps its own flags. Nothing changes
    when bytecode is written anyway or a prefix is already chosen.
    """
    if not sys.flags.dont_write_bytecode or os.environ.get("PYTHONPYCACHEPREFIX"):
        return
    prefix = tempfile.mkdtemp(prefix="raftcache-test-pycache-")
    _CHILD_PYCACHE.append(prefix)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = prefix


def pytest_unconfigure(config: pytest.Config) -> None:
    while _CHILD_PYCACHE:
        shutil.rmtree(_CHILD_PYCACHE.pop(), ignore_errors=True)
