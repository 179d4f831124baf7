"""What every client-side subcommand shares: the endpoint options and the exit codes.

Rule: exit codes mean the same thing in every subcommand — 0 ok, 1 a missing key (``get``,
``del``) or member (``member remove``), 2 a usage error (argparse's own, an argument that is not
UTF-8, or a request the cluster refused: 4xx, a missing or wrong token included), 3 the cluster
could not answer (unreachable, no leader, indeterminate write, 5xx). Errors are printed as one
line on stderr, prefixed with the subcommand, in the operator's terms (``describe``); no
traceback reaches the user for expected errors.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from raftcache.client import AsyncClient
from raftcache.client.endpoints import DEFAULT_ENDPOINTS, parse_endpoints, tls_context
from raftcache.client.errors import (
    AuthError,
    ConnectionFailedError,
    ProtocolError,
    RaftcacheError,
    UnavailableError,
)

EXIT_OK = 0
EXIT_MISSING = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

ENDPOINTS_ENV = "RAFTCACHE_ENDPOINTS"
TOKEN_ENV = "RAFTCACHE_CLIENT_TOKEN"

Handler = Callable[[argparse.Namespace], int]


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """``--endpoints``, ``--timeout`` and ``--token``, given after the subcommand."""
    group = parser.add_argument_group("cluster connection")
    group.add_argument(
        "--endpoints",
        metavar="URL,...",
        type=utf8_text,
        default=None,
        help=f"comma-separated node URLs (env {ENDPOINTS_ENV}; default {DEFAULT_ENDPOINTS})",
    )
    group.add_argument(
        "--timeout",
        type=positive_float,
        default=5.0,
        metavar="S",
        help="deadline of each request in seconds, retries included (default 5)",
    )
    group.add_argument(
        "--token",
        type=utf8_text,
        default=None,
        help=f"client token sent as a Bearer token (env {TOKEN_ENV})",
    )
    group.add_argument("--tls-ca", metavar="FILE", help="CA bundle to verify https endpoints")
    group.add_argument("--tls-cert", metavar="FILE", help="client certificate (mutual TLS)")
    group.add_argument("--tls-key", metavar="FILE", help="client private key (mutual TLS)")


def endpoints_of(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> list[str]:
    """The endpoints from ``--endpoints``, else the environment, else the local cluster."""
    env = os.environ if env is None else env
    raw = args.endpoints or env.get(ENDPOINTS_ENV) or DEFAULT_ENDPOINTS
    if not is_utf8(raw):
        raise ValueError(f"{ENDPOINTS_ENV} is not valid UTF-8: {os.fsencode(raw)!r}")
    return parse_endpoints(raw)


def token_of(args: argparse.Namespace) -> str | None:
    """The client token from ``--token``, else the environment."""
    if args.token is not None:
        return str(args.token)
    token = os.environ.get(TOKEN_ENV)
    if token is not None and not is_utf8(token):
        raise ValueError(f"{TOKEN_ENV} is not valid UTF-8")
    return token


def ssl_context_of(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context the ``--tls-*`` options ask for; None keeps the default verification."""
    tls = (args.tls_ca, args.tls_cert, args.tls_key)
    return tls_context(*tls) if any(tls) else None


def make_client(args: argparse.Namespace, **options: Any) -> AsyncClient:
    """An ``AsyncClient`` configured from the connection options."""
    ssl_context = ssl_context_of(args)
    if ssl_context is not None:
        options["ssl_context"] = ssl_context
    return AsyncClient(
        endpoints_of(args), timeout=args.timeout, client_token=token_of(args), **options
    )


def exit_code_for(error: RaftcacheError) -> int:
    """3 when the cluster could not answer, 2 when it refused the request."""
    if isinstance(error, ProtocolError) or error.status is None or error.status >= 500:
        return EXIT_UNAVAILABLE
    return EXIT_USAGE


UNAUTHORIZED = f"unauthorized: the client token is missing or wrong (--token or {TOKEN_ENV})"
FORBIDDEN = (
    f"forbidden: the client token is read-only; this needs the read-write one "
    f"(--token or {TOKEN_ENV})"
)
NO_LEADER = "no leader: the cluster has no quorum right now"


def describe(error: RaftcacheError, *, write: bool = False) -> str:
    """The error in an operator's terms: what went wrong and, for a write, what it did.

    A 401 names the token options; a refused connection names the endpoints it was refused at
    (and why), not aiohttp's text; a 503 says that nothing happened, as docs/api.md defines it.
    Other errors keep the client's message.
    """
    if isinstance(error, AuthError):
        return FORBIDDEN if error.status == 403 else UNAUTHORIZED
    if isinstance(error, ConnectionFailedError) and error.failures:
        by_reason: dict[str, list[str]] = {}
        for url, reason in error.failures.items():
            by_reason.setdefault(reason, []).append(url)
        parts = [f"{', '.join(urls)} ({reason})" for reason, urls in by_reason.items()]
        return "cannot connect to " + "; ".join(parts)
    if isinstance(error, UnavailableError) and error.status == 503:
        detail = str(error.body.get("error", ""))
        if detail.startswith("no leader"):
            message = NO_LEADER
        elif error.body.get("overloaded") is True:
            message = f"overloaded: {detail}"
        else:
            message = f"unavailable: {detail or error}"
        return f"{message}; nothing was written" if write else message
    return str(error)


def down_role(error: RaftcacheError) -> str:
    """The role shown for a node that did not give its status: ``unauthorized`` when it
    refused our token (it is up), else ``unreachable``."""
    return "unauthorized" if isinstance(error, AuthError) else "unreachable"


def fail(command: str, message: str, code: int) -> int:
    print(f"raftcache {command}: error: {message}", file=sys.stderr)
    return code


def run_async(command: str, coro: Coroutine[Any, Any, int], *, write: bool = False) -> int:
    """Run a subcommand's coroutine, turning expected errors into a message and an exit code.

    ``write``: the command changes data (a 503 then says that nothing was written).
    """
    try:
        return asyncio.run(coro)
    except RaftcacheError as exc:
        return fail(command, describe(exc, write=write), exit_code_for(exc))
    except (ValueError, OSError) as exc:  # bad endpoint URL or option; unreadable TLS file
        return fail(command, str(exc), EXIT_USAGE)


def is_utf8(text: str) -> bool:
    """False for a string carrying undecodable bytes (``surrogateescape``, as ``sys.argv`` and
    ``os.environ`` hold them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def utf8_text(text: str) -> str:
    """argparse type: text that is valid UTF-8 (keys, prefixes, tokens and URLs go on the wire
    as UTF-8; an argument of other bytes is a usage error, not a codec traceback)."""
    if not is_utf8(text):
        raise argparse.ArgumentTypeError(f"not valid UTF-8: {os.fsencode(text)!r}")
    return text


def utf8_value(text: str) -> str:
    """argparse type: a value given as an argument, which is stored as UTF-8."""
    if not is_utf8(text):
        raise argparse.ArgumentTypeError(
            f"not valid UTF-8: {os.fsencode(text)!r} "
            "(to store other bytes, give VALUE '-' and pipe them on stdin)"
        )
    return text


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be finite and > 0: {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text!r}")
    return value
