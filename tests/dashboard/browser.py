"""Headless Chromium for the dashboard tests: Debian's ``/usr/bin/chromium`` driven by playwright.

Rule: never ``playwright install`` (no browser download here): the system binary, with flags that
keep it off the network (this machine has none, and Chromium's background fetches would only
fail). Absent browser or playwright → the test is skipped with a message naming the make target
that installs both; ``RAFTCACHE_REQUIRE_BROWSER=1`` (set by ``make browser-test``) turns that skip
into a failure, so the target can never pass by skipping.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("RAFTCACHE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Where screenshots go besides the test's tmp_path (make browser-test sets it).
ARTIFACTS_ENV = "RAFTCACHE_ARTIFACTS_DIR"

#: Reasons the browser tests were skipped in this run (printed in the terminal summary).
SKIPPED: list[str] = []


def missing_browser() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    if importlib.util.find_spec("playwright") is None:
        return "Python playwright is not installed in .venv"
    if not CHROMIUM.exists():
        return f"chromium not found at {CHROMIUM}"
    return None


def require_browser() -> None:
    """Skip (or fail under ``make browser-test``) when Chromium or playwright is missing."""
    reason = missing_browser()
    if reason is None:
        return
    message = f"dashboard browser test not run: {reason} — run make browser-test"
    if os.environ.get("RAFTCACHE_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    SKIPPED.append(message)
    pytest.skip(message)


def artifact_paths(tmp_path: Path, name: str) -> list[Path]:
    """Where to save a screenshot: the test's tmp dir, and the artifacts dir when set."""
    paths = [tmp_path / name]
    extra = os.environ.get(ARTIFACTS_ENV)
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        paths.append(Path(extra) / name)
    return paths
