"""``<data-dir>/KNOWN``: the stores a store learnt from the map, kept across its restarts
(``raftcache.store.known``) — written and read back, and a missing or damaged file read as
an empty one (it holds hints only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftcache.store.known import KNOWN_FILE, Known, read_known, write_known


def test_what_was_written_is_read_back(tmp_path: Path) -> None:
    assert read_known(tmp_path) == Known()
    write_known(tmp_path, {"s5": "http://127.0.0.1:2", "s1": "http://127.0.0.1:1"}, ["s5", "s4"])
    known = read_known(tmp_path)
    assert known.urls == {"s1": "http://127.0.0.1:1", "s5": "http://127.0.0.1:2"}
    assert known.meta == ("s5", "s4")  # in order: the leader first
    write_known(tmp_path, {"s6": "http://127.0.0.1:3"}, ["s6"])
    assert read_known(tmp_path) == Known({"s6": "http://127.0.0.1:3"}, ("s6",))


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"format": 2, "urls": {}, "meta": []}',
        '{"format": 1, "urls": {"s1": 1}, "meta": []}',
        '{"format": 1, "urls": {}, "meta": "s1"}',
        "[]",
    ],
)
def test_a_damaged_record_reads_as_empty(tmp_path: Path, text: str) -> None:
    (tmp_path / KNOWN_FILE).write_text(text)
    assert read_known(tmp_path) == Known()
