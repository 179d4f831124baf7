"""Structured logs: one line per event, text or JSON, extras as fields."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from raftcache.process.logs import configure_logging


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def emit_error() -> None:
    log = logging.getLogger("raftcache.test")
    log.info("node serving", extra={"id": "n1", "url": "http://h:1"})
    log.debug("hidden")
    try:
        raise ValueError("multi\nline")
    except ValueError:
        log.exception("boom")


@pytest.mark.usefixtures("restore_root")
def test_json_lines() -> None:
    stream = io.StringIO()
    configure_logging("json", "info", stream)
    emit_error()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (orjson.loads(line) for line in lines)
    assert first["event"] == "node serving"
    assert (first["id"], first["url"], first["level"]) == ("n1", "http://h:1", "info")
    assert second["level"] == "error"
    assert "ValueError" in second["exc"]


@pytest.mark.usefixtures("restore_root")
def test_text_lines() -> None:
    stream = io.StringIO()
    configure_logging("text", "debug", stream)
    emit_error()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert "INFO raftcache.test: node serving id=n1 url=http://h:1" in lines[0]
    assert "hidden" in lines[1]
    assert "exc=" in lines[2]
