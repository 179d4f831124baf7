"""msgpack behind a small typed facade, so the storage modules stay clean under mypy --strict.

Rule: storage payloads are msgpack with ``bin`` for bytes and ``str`` for text. ``unpack``
raises ``ValueError`` for anything undecodable (msgpack's own errors are ValueErrors; type
errors from malformed maps are converted), so callers catch one exception type.
"""

from __future__ import annotations

import importlib
from typing import Any

_msgpack: Any = importlib.import_module("msgpack")  # ships no type information


def pack(obj: Any) -> bytes:
    # packb builds a fresh Packer per call: a shared one would not be thread-safe, and several
    # storages (one per node in a test cluster) may be driven from different threads.
    data: bytes = _msgpack.packb(obj, use_bin_type=True)
    return data


def unpack(data: bytes | memoryview) -> Any:
    try:
        return _msgpack.unpackb(data, raw=False)
    except (TypeError, OverflowError) as exc:
        raise ValueError(str(exc)) from exc
