"""Say plainly, at the end of the run, when the browser test was skipped and how to run it."""

from __future__ import annotations

import pytest

from .browser import SKIPPED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for message in dict.fromkeys(SKIPPED):
        terminalreporter.write_line(message, yellow=True, bold=True)
