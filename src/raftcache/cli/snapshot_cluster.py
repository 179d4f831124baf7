"""How ``raftcache snapshot`` talks to the cluster: who leads each group, downloads, restores.

Rule: a backup and a restore go to the leader of their group, found from the endpoints' own
``/v1/status`` (all at once): on a one-group cluster the endpoint that says it leads, else the
first that answers (it forwards) — on a sharded one each group's leader as ``raftcache shards``
merges the stores' reports (the highest term wins), reached at the store its replica id names,
else the first store that answers (it forwards ``?group=gN`` to the group's leader). The number
of groups is the one every answering endpoint reports (``sharding.groups``; a node without it
runs one group); endpoints that disagree are refused. Errors are ``CliError`` with the exit code
of docs/operations.md: 4xx → 2, no answer or 5xx → 3.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from raftcache.cli.common import (
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    endpoints_of,
    ssl_context_of,
    token_of,
)
from raftcache.cli.shards import shard_rows
from raftcache.client.endpoints import parse_endpoints
from raftcache.network.groups import store_of
from raftcache.store import group_id

_CHUNK = 1 << 20
#: Deadline of one endpoint's ``/v1/status`` while looking for leaders.
STATUS_TIMEOUT_S = 5.0


class CliError(Exception):
    """A failure with its exit code; the message goes to stderr as one line."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def session(args: argparse.Namespace) -> aiohttp.ClientSession:
    """An HTTP session with the token, TLS options and the (per request) ``--timeout``."""
    token = token_of(args)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connector = aiohttp.TCPConnector(ssl=ssl_context_of(args) or True)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    return aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout)


def candidates(args: argparse.Namespace) -> list[str]:
    """``--url`` when given, else the endpoints of ``--endpoints`` / the environment."""
    if args.url is not None:
        return parse_endpoints(args.url)
    return endpoints_of(args)


@dataclass(frozen=True)
class ClusterView:
    """What the endpoints that answered said: (endpoint, its ``/v1/status``), in the order
    the endpoints were given, and the number of data groups."""

    statuses: list[tuple[str, dict[str, Any]]]
    groups: int

    def leader_url(self) -> str:
        """One group: the endpoint that says it is the leader, else the first that answered."""
        for url, status in self.statuses:
            if status.get("role") == "leader":
                return url
        return self.statuses[0][0]

    def group_urls(self) -> dict[str, str]:
        """Every data group → the endpoint of the store leading it (else the first that
        answered: it forwards a request naming the group)."""
        by_store = {str(s.get("id")): url for url, s in reversed(self.statuses)}
        fallback = self.statuses[0][0]
        urls = {group_id(n): fallback for n in range(self.groups)}
        for row in shard_rows([s for _, s in self.statuses]):
            leader = row.get("leader")
            if row["group"] in urls and isinstance(leader, str):
                urls[row["group"]] = by_store.get(store_of(leader), fallback)
        return urls


async def cluster_view(http: aiohttp.ClientSession, endpoints: Sequence[str]) -> ClusterView:
    """Ask every endpoint's ``/v1/status`` at once (see the module docstring)."""
    answers = await asyncio.gather(
        *(_status(http, url) for url in endpoints), return_exceptions=True
    )
    for answer in answers:
        if isinstance(answer, BaseException):  # a token refused: say so, not "no answer"
            raise answer
    statuses = [(url, s) for url, s in zip(endpoints, answers, strict=True) if isinstance(s, dict)]
    if not statuses:
        raise CliError(f"no node answered ({', '.join(endpoints)})", EXIT_UNAVAILABLE)
    counts = {url: groups_of(status) for url, status in statuses}
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{url}: {n}" for url, n in counts.items())
        raise CliError(f"the endpoints disagree on the number of groups ({shown})", EXIT_USAGE)
    return ClusterView(statuses, next(iter(counts.values())))


def groups_of(status: dict[str, Any]) -> int:
    """The number of data groups a node's status reports (one for a node of one group)."""
    sharding = status.get("sharding")
    groups = sharding.get("groups") if isinstance(sharding, dict) else None
    return groups if type(groups) is int and groups >= 1 else 1


async def _status(http: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    try:
        timeout = aiohttp.ClientTimeout(total=STATUS_TIMEOUT_S)
        async with http.get(url + "/v1/status", timeout=timeout) as r:
            if r.status == 401 or r.status == 403:
                raise CliError(await error_text(r), EXIT_USAGE)
            if r.status != 200:
                return None
            status = await r.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return status if isinstance(status, dict) else None


async def error_text(response: aiohttp.ClientResponse) -> str:
    """The status and the node's error message (else the start of the body), on one line."""
    body = await response.read()
    try:
        message = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        message = None
    text = message if isinstance(message, str) else body[:200].decode("utf-8", "replace")
    return f"{response.status} from {response.url.origin()}: {text}"


def code_for(status: int) -> int:
    return EXIT_USAGE if 400 <= status < 500 else EXIT_UNAVAILABLE


def group_query(group: str | None) -> str:
    """The query naming ``group`` (none for a one-group node, which knows no ``?group=``)."""
    return "" if group is None else f"?group={group}"


async def download(http: aiohttp.ClientSession, url: str, path: Path) -> str:
    """Stream ``url`` into ``path`` and fsync it; the SHA-256 of the whole file."""
    digest = hashlib.sha256()
    async with http.get(url) as response:
        if response.status != 200:
            raise CliError(await error_text(response), code_for(response.status))
        with path.open("wb") as f:
            async for chunk in response.content.iter_chunked(_CHUNK):
                digest.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    return digest.hexdigest()


async def post_restore(
    http: aiohttp.ClientSession, url: str, data: bytes, group: str | None = None
) -> dict[str, Any]:
    """``POST /v1/restore`` of the backup file ``data`` at ``url`` (into ``group``)."""
    headers = {"Content-Type": "application/octet-stream"}
    target = url + "/v1/restore" + group_query(group)
    async with http.post(target, data=data, headers=headers) as response:
        if response.status != 200:
            raise CliError(await error_text(response), code_for(response.status))
        result: dict[str, Any] = await response.json()
        return result
