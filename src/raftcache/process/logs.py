"""Structured logging for ``raftcache serve``: one line per event, as text or JSON.

Rule: library code logs through ``logging.getLogger("raftcache....")`` with a short event
message and structured fields passed as ``extra={...}``; only the composition root calls
``configure_logging``, which decides the format. A line never spans several lines (a traceback
is folded into the ``exc`` field), so logs stay greppable and machine-readable.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra`` fields of a record, in insertion order."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "event", ...extra fields, "exc"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        line.update(record_fields(record))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode("utf-8")


class TextFormatter(logging.Formatter):
    """``TS LEVEL logger: event key=value ...`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, f"{record.name}:", record.getMessage()]
        parts.extend(f"{k}={v}" for k, v in record_fields(record).items())
        if record.exc_info:
            parts.append("exc=" + repr(self.formatException(record.exc_info)))
        return " ".join(str(p).replace("\n", "\\n") for p in parts)


def configure_logging(fmt: str = "text", level: str = "info", stream: TextIO | None = None) -> None:
    """Send every ``raftcache`` and ``aiohttp`` log record to ``stream`` (stderr) as one line.

    Args:
        fmt: ``text`` or ``json``.
        level: lowest level logged (``debug``, ``info``, ``warning``, ``error``).
        stream: where lines go; stderr by default.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's access log would duplicate the server's own request lines.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
