"""A tiny synchronous HTTP/JSON client for the orchestrator's control calls (not for load).

Rule: control traffic (status, prefill, leader lookup) goes through here with a timeout on
every call; load goes through wrk. Only 127.0.0.1 URLs are ever used.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def request(
    method: str,
    url: str,
    body: bytes | None = None,
    *,
    timeout_s: float = 10.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One request; returns (status, body) for any HTTP status, raises OSError otherwise."""
    assert url.startswith("http://127.0.0.1:"), url
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def json_call(method: str, url: str, payload: Any = None, *, timeout_s: float = 10.0) -> Any:
    """A JSON request that must answer 200; returns the decoded body."""
    body = None if payload is None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"} if body is not None else {}
    status, data = request(method, url, body, timeout_s=timeout_s, headers=headers)
    if status != 200:
        raise RuntimeError(f"{method} {url} -> {status}: {data[:300]!r}")
    return json.loads(data) if data else None
