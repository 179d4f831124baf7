"""Fixtures of the hostile-input tests: one real 3-node cluster per module, small limits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .threaded import ThreadedCluster

CLUSTER_TOKEN = "hostile-cluster-secret"
SMALL = {"max_value_bytes": 1024, "max_batch_ops": 10}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedCluster]:
    """A 3-node cluster without a cluster token (the Raft endpoints are open to garbage)."""
    threaded = ThreadedCluster(tmp_path_factory.mktemp("cluster"), **SMALL).start()
    try:
        yield threaded
    finally:
        threaded.stop()


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedCluster]:
    """A 3-node cluster whose Raft endpoints need the cluster token."""
    threaded = ThreadedCluster(
        tmp_path_factory.mktemp("token"), cluster_token=CLUSTER_TOKEN, **SMALL
    ).start()
    try:
        yield threaded
    finally:
        threaded.stop()
