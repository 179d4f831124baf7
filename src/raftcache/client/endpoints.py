"""Endpoint lists, key encoding and the retry back-off policy: the client's pure helpers.

Rule: nothing here does I/O or reads a clock; the back-off draws from the ``random.Random`` it is
given, so a test can replay a schedule exactly.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from raftcache.client.errors import BadRequestError

DEFAULT_ENDPOINTS = "http://127.0.0.1:8001,http://127.0.0.1:8002,http://127.0.0.1:8003"


def parse_endpoints(endpoints: str | Sequence[str]) -> list[str]:
    """Normalise endpoints to a de-duplicated list of base URLs without a trailing slash.

    Args:
        endpoints: A list of base URLs, or one comma-separated string. ``host:port`` without a
            scheme means ``http://host:port``.

    Raises:
        ValueError: No endpoint, or one that is not an http(s) URL with a host.
    """
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    result: list[str] = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        if "://" not in item:
            item = "http://" + item
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) endpoint URL: {raw!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"an endpoint is a base URL, without query or fragment: {raw!r}")
        url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        if url not in result:
            result.append(url)
    if not result:
        raise ValueError("no endpoint given")
    return result


def encode_key(key: str) -> str:
    """Percent-encode a key as one path segment: ``/`` becomes ``%2F``, UTF-8 is escaped.

    Raises:
        BadRequestError: The key is empty (the server would route it elsewhere).
    """
    if not isinstance(key, str):
        raise TypeError(f"keys are str, got {type(key).__name__}")
    if not key:
        raise BadRequestError("key must be non-empty")
    return quote(key, safe="")


def encode_query(params: Sequence[tuple[str, str]]) -> str:
    """Build ``?a=b&c=d`` (or ``""``), percent-encoding names and values the same way as keys."""
    if not params:
        return ""
    return "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential back-off with jitter between attempts.

    Attempt k (0-based count of waits so far) waits ``min(initial * multiplier**k, maximum)``
    scaled by a factor drawn uniformly from ``[1 - jitter, 1]``: jitter spreads out clients that
    failed together (an election) so they do not all return at the same instant.
    """

    initial_s: float = 0.05
    maximum_s: float = 1.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.maximum_s < self.initial_s or self.multiplier < 1:
            raise ValueError(f"inconsistent retry policy: {self}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter}")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The delay before retry number ``attempt + 1``."""
        base = min(self.initial_s * self.multiplier ** min(attempt, 64), self.maximum_s)
        return base * (1.0 - self.jitter * rng.random())


def tls_context(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """A client TLS context: trust ``ca_file`` (else the system CAs), and present
    ``cert_file``/``key_file`` when the cluster requires mutual TLS.
    """
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate needs both cert_file and key_file")
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context
