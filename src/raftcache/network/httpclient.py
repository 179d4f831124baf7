"""One HTTP exchange with a peer, and what its answer says about the peer.

Rule: ``transfer`` posts a prepared body and returns the answer, mapping transport failures to
the ``NetworkError`` family: a timeout is ``NetworkTimeoutError``, a certificate that does not
verify is permanent (it will not verify next time either), a refused or reset connection to a
known peer is transient (kind ``"connection"``). Only answers from our own routes (200 and 415)
speak for the peer's capabilities; a proxy's 502 says nothing about it.

``lean_client.LeanClient.transfer`` is the same exchange on our own connections (less CPU);
``resolve_client`` picks between them (``auto``: lean when httptools is installed).
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass

import aiohttp
from yarl import URL

from raftcache.network import compression
from raftcache.network.errors import NetworkError, NetworkTimeoutError
from raftcache.network.httpwire import (
    ACCEPT_POST,
    JSON,
    RAFT_BATCH,
    RAFT_BATCH_APPEND,
    parse_formats,
)

__all__ = [
    "CLIENTS",
    "NOTHING",
    "Answer",
    "PeerCapabilities",
    "capabilities_of",
    "lean_client_available",
    "resolve_client",
    "transfer",
]

CLIENTS = ("auto", "lean", "aiohttp")

_RAW_BODY_MAX = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PeerCapabilities:
    """What a peer said it reads: content codings and body formats."""

    encodings: frozenset[str] = frozenset()
    formats: frozenset[str] = frozenset({"json"})
    #: The peer serves ``AppendEntriesBatch`` (``httpwire.RAFT_BATCH``).
    batch: bool = False


NOTHING = PeerCapabilities()
"""A peer that has said nothing (yet, or an older node): plain JSON only."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str
    capabilities: PeerCapabilities | None  # None: the answer does not speak for the peer


def capabilities_of(
    status: int,
    accept_encoding: str | None,
    accept_post: str | None,
    raft_batch: str | None = None,
) -> PeerCapabilities | None:
    """What an answer says the peer reads; None unless it came from our own routes (200, 415)."""
    if status not in (200, 415):
        return None
    return PeerCapabilities(
        compression.parse_accept_encoding(accept_encoding),
        parse_formats(accept_post),
        RAFT_BATCH_APPEND in (raft_batch or "").replace(" ", "").split(","),
    )


async def transfer(
    session: aiohttp.ClientSession,
    target: str,
    url: URL,
    wire: bytes,
    headers: dict[str, str],
    timeout: float,
) -> Answer:
    """POST ``wire`` to ``url`` (node ``target``) and read the whole answer."""
    # aiohttp warns (ResourceWarning) about raw bodies over 1 MiB, which a snapshot chunk is
    # once base64-encoded; a BytesIO body is streamed in pieces instead.
    data: bytes | io.BytesIO = wire if len(wire) <= _RAW_BODY_MAX else io.BytesIO(wire)
    try:
        async with session.post(url, data=data, headers=headers) as resp:
            body = await resp.read()
            caps = capabilities_of(
                resp.status,
                resp.headers.get("Accept-Encoding"),
                resp.headers.get(ACCEPT_POST),
                resp.headers.get(RAFT_BATCH),
            )
            return Answer(resp.status, body, resp.content_type or JSON, caps)
    except TimeoutError:
        raise NetworkTimeoutError(f"RPC to node {target} timed out after {timeout:g}s") from None
    except aiohttp.ClientSSLError as exc:
        raise NetworkError(f"TLS with node {target} failed: {exc}", permanent=True) from exc
    except (aiohttp.ClientError, OSError) as exc:
        raise NetworkError(
            f"Cannot reach node {target} at {url.origin()}: {exc}", kind="connection"
        ) from exc


def lean_client_available() -> bool:
    """Whether ``lean_client`` (this module's wire on our own connections) can run: it parses
    answers with httptools (a dependency; the import may still fail on an odd install)."""
    return importlib.util.find_spec("httptools") is not None


def resolve_client(name: str) -> str:
    """``"lean"`` or ``"aiohttp"`` for a setting of ``CLIENTS`` (``auto``: lean if it can)."""
    if name not in CLIENTS:
        raise ValueError(f"client must be one of {CLIENTS}, got {name!r}")
    if name == "lean" and not lean_client_available():
        raise ValueError("client='lean' needs httptools, missing here (pip install httptools)")
    if name == "auto":
        return "lean" if lean_client_available() else "aiohttp"
    return name
