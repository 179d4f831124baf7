"""Well-typed Raft messages with hostile values, against a real one-node ``raftcache serve``.

Such a message decodes, so no amount of JSON validation stops it; only the cluster token keeps
strangers out (``test_fuzz_cluster``), and a node without one must still refuse a message that
cannot come from a correct leader — with a 400 — and keep serving. They run in a separate
process because before ``raftcache.raft.validation`` existed two of them fail-stopped or froze
the node; the HTTP transport now refuses them with a 400 before the core sees them.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from .procs import Node, Procs, wait_status

pytestmark = pytest.mark.e2e

Attack = Callable[[int, int], tuple[str, dict[str, Any]]]


def entries_with_a_hole(term: int, last: int) -> tuple[str, dict[str, Any]]:
    entries = [
        {"term": term + 1, "index": last + 1, "command": ""},
        {"term": term + 1, "index": last + 9, "command": ""},
    ]
    body = {
        "term": term + 1,
        "leader_id": "evil",
        "prev_log_index": last,
        "prev_log_term": term,
        "entries": entries,
    }
    return "/raft/append-entries", body


def commit_beyond_the_log(term: int, last: int) -> tuple[str, dict[str, Any]]:
    # 50 entries "at index 0" match the empty prefix, so match_index becomes 50 and the
    # commit index follows leader_commit past the end of the real log.
    entries = [{"term": 0, "index": 0, "command": ""}] * 50
    body = {
        "term": term + 1,
        "leader_id": "evil",
        "prev_log_index": 0,
        "prev_log_term": 0,
        "entries": entries,
        "leader_commit": 50,
    }
    return "/raft/append-entries", body


def undecodable_configuration(term: int, last: int) -> tuple[str, dict[str, Any]]:
    body = {
        "term": term + 1,
        "leader_id": "evil",
        "last_included_index": last + 100,
        "last_included_term": term + 1,
        "offset": 0,
        "data": "",
        "done": True,
        "configuration": base64.b64encode(b"not a configuration").decode(),
    }
    return "/raft/install-snapshot", body


def negative_numbers(term: int, last: int) -> tuple[str, dict[str, Any]]:
    body = {"term": -1, "leader_id": "evil", "prev_log_index": -5, "prev_log_term": -1}
    return "/raft/append-entries", body


ATTACKS = [
    pytest.param(
        entries_with_a_hole,
        id="entries-with-a-hole",
    ),
    pytest.param(
        commit_beyond_the_log,
        id="commit-beyond-the-log",
    ),
    pytest.param(
        undecodable_configuration,
        id="undecodable-snapshot-configuration",
    ),
    pytest.param(
        negative_numbers,
        id="negative-numbers",
    ),
]


@pytest.fixture
async def single(tmp_path: Path) -> AsyncIterator[tuple[Procs, Node]]:
    procs = Procs(tmp_path)
    node = procs.add("n1")
    procs.start(node, [node])
    try:
        yield procs, node
    finally:
        procs.stop_all()


@pytest.mark.parametrize("attack", ATTACKS)
async def test_hostile_message_is_refused_and_the_node_serves(
    single: tuple[Procs, Node], attack: Attack
) -> None:
    _, node = single
    async with aiohttp.ClientSession() as session:
        status = await wait_status(session, node, {"role": "leader"})
        term, last = status["term"], status["commit_index"]
        assert isinstance(term, int)
        assert isinstance(last, int)
        path, body = attack(term, last)
        try:
            async with session.post(
                node.url + path, data=orjson.dumps(body), timeout=aiohttp.ClientTimeout(total=8)
            ) as resp:
                answer = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            pytest.fail(f"no answer to the hostile message: {exc!r}")
        assert answer[0] == 400, answer
        # Still alive and serving: it re-elects itself (one-node cluster) and takes a write.
        assert node.alive()
        await wait_status(session, node, {"role": "leader"}, timeout=20)
        async with session.put(
            node.url + "/v1/keys/after", data=b"ok", timeout=aiohttp.ClientTimeout(total=10)
        ) as resp:
            assert resp.status == 200, await resp.text()
