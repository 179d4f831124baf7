"""Fault-injection tests: real ``raftcache serve`` processes behind a proxy mesh.

Every test here starts nodes through ``raftcache.testing.harness.ProcessCluster``, which stops
them on any exit (and the nodes die with the test process anyway), on 127.0.0.1 only.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Registered here (not in pyproject) so the marker lives with the tests that use it.
    config.addinivalue_line(
        "markers", "faults: fault-injection runs on real processes (part of make test)"
    )
