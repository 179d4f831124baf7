"""``raftcache snapshot save|restore|inspect FILE``: backups of a running cluster's cache.

Rule: a file is never trusted unverified, and a backup is never half-written. ``save`` asks the
leader (found through ``/v1/status``; else the first node that answers, which forwards) for
``GET /v1/backup``, streams it into a temporary file beside FILE, fsyncs it, verifies it whole
(magic, format, length, checksum, and the snapshot decoded), and only then renames it over FILE
and fsyncs the directory — so FILE is either the old file or a complete, verified backup.
``restore`` verifies the file locally first (nothing is sent for a bad file), then
``POST /v1/restore`` on the leader: the cluster replaces its whole cache with the backup's as
one replicated operation (docs/operations.md, "Backup and restore"). ``inspect`` verifies a file
and prints its header.

Exit codes: 0 done, 1 the file is not a valid backup (or the download was not), 2 a usage error
or a request the cluster refused (4xx), 3 the cluster could not answer (unreachable, 5xx).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from raftcache.cache.backup import (
    MAGIC_PREFIX,
    MAX_HEADER_BYTES,
    BackupFormatError,
    BackupInfo,
    parse_head,
    verify_backup,
    verify_backup_stream,
)
from raftcache.cache.snapshot import SnapshotFormatError, read_snapshot
from raftcache.cli.common import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    add_client_options,
    endpoints_of,
    fail,
    ssl_context_of,
    token_of,
)
from raftcache.client.endpoints import parse_endpoints

EXIT_BAD_FILE = 1
#: Default deadline of one save or restore: a large cache takes a while to move.
DEFAULT_TIMEOUT_S = 300.0
_CHUNK = 1 << 20


class CliError(Exception):
    """A failure with its exit code; the message goes to stderr as one line."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def add_parser(subparsers: Any) -> None:
    """Register ``snapshot`` and its subcommands on the top-level ``subparsers``."""
    p = subparsers.add_parser(
        "snapshot",
        help="back up or restore the cluster's cache",
        description="Back up the cluster's cache to a file, or restore one into the cluster.",
    )
    sub = p.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")
    save = sub.add_parser(
        "save",
        help="download a consistent backup to FILE",
        description="Download a consistent backup of the cache from the leader into FILE "
        "(written atomically and verified).",
    )
    restore = sub.add_parser(
        "restore",
        help="replace the cluster's cache with FILE's contents",
        description="Verify FILE, then replace the whole cache of the running cluster with its "
        "contents, as one replicated operation.",
    )
    for q in (save, restore):
        q.add_argument("file", type=Path, metavar="FILE")
        q.add_argument("--url", default=None, help="ask this node (default: find the leader)")
        add_client_options(q)
        q.set_defaults(timeout=DEFAULT_TIMEOUT_S)
    save.set_defaults(func=cmd_save)
    restore.set_defaults(func=cmd_restore)
    inspect = sub.add_parser(
        "inspect", help="verify FILE and print its header", description="Verify a backup file."
    )
    inspect.add_argument("file", type=Path, metavar="FILE")
    inspect.set_defaults(func=cmd_inspect)


def _run(command: str, args: argparse.Namespace, action: Callable[[], int]) -> int:
    """Run ``action``, turning expected failures into one line on stderr and an exit code."""
    try:
        return action()
    except CliError as exc:
        return fail(command, str(exc), exc.code)
    except (BackupFormatError, SnapshotFormatError) as exc:
        return fail(command, f"{args.file}: {exc}", EXIT_BAD_FILE)
    except aiohttp.ClientError as exc:
        return fail(command, f"request failed: {exc}", EXIT_UNAVAILABLE)
    except OSError as exc:
        return fail(command, str(exc), EXIT_USAGE)
    except ValueError as exc:  # a bad endpoint URL or TLS option
        return fail(command, str(exc), EXIT_USAGE)


def cmd_save(args: argparse.Namespace) -> int:
    return _run("snapshot save", args, lambda: save(args))


def cmd_restore(args: argparse.Namespace) -> int:
    return _run("snapshot restore", args, lambda: restore(args))


def cmd_inspect(args: argparse.Namespace) -> int:
    return _run("snapshot inspect", args, lambda: inspect_file(args))


def inspect_file(args: argparse.Namespace) -> int:
    """Verify FILE and print its header and number of keys."""
    info, keys = verify_file(args.file)
    print(orjson.dumps({**info.provenance(), "keys": keys, "verified": True}).decode())
    return EXIT_OK


# --- files --------------------------------------------------------------------------------


def verify_file(path: Path) -> tuple[BackupInfo, int]:
    """Verify the backup at ``path`` whole; its header and number of keys."""
    with path.open("rb") as f:
        info = verify_backup_stream(f)
        f.seek(0)
        _, offset = parse_head(f.read(len(MAGIC_PREFIX) + 12 + MAX_HEADER_BYTES))
        f.seek(offset)
        snapshot = f.read(info.snapshot_bytes)
    return info, len(read_snapshot(io.BytesIO(snapshot)).records)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# --- talking to the cluster -----------------------------------------------------------------


def _session(args: argparse.Namespace) -> aiohttp.ClientSession:
    token = token_of(args)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    connector = aiohttp.TCPConnector(ssl=ssl_context_of(args) or True)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    return aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout)


def _candidates(args: argparse.Namespace) -> list[str]:
    if args.url is not None:
        return parse_endpoints(args.url)
    return endpoints_of(args)


async def find_leader(http: aiohttp.ClientSession, endpoints: Sequence[str]) -> str:
    """The endpoint that says it is the leader; else the first that answers (it forwards)."""
    answering: list[str] = []
    for url in endpoints:
        try:
            async with http.get(url + "/v1/status", timeout=aiohttp.ClientTimeout(total=5)) as r:
                if r.status == 401 or r.status == 403:
                    raise CliError(await _error_text(r), EXIT_USAGE)
                if r.status != 200:
                    continue
                status = await r.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            continue
        if status.get("role") == "leader":
            return url
        answering.append(url)
    if not answering:
        raise CliError(f"no node answered ({', '.join(endpoints)})", EXIT_UNAVAILABLE)
    return answering[0]


async def _error_text(response: aiohttp.ClientResponse) -> str:
    body = await response.read()
    try:
        message = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        message = None
    text = message if isinstance(message, str) else body[:200].decode("utf-8", "replace")
    return f"{response.status} from {response.url.origin()}: {text}"


def _code_for(status: int) -> int:
    return EXIT_USAGE if 400 <= status < 500 else EXIT_UNAVAILABLE


def save(args: argparse.Namespace) -> int:
    """Download into a temporary file, fsync, verify, rename over FILE, fsync the directory."""
    target: Path = args.file
    if target.is_dir():
        raise CliError(f"{target} is a directory", EXIT_USAGE)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        digest = asyncio.run(_fetch(args, tmp))
        info, keys = verify_file(tmp)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    summary = {**info.provenance(), "keys": keys, "file": str(target), "sha256": digest}
    print(orjson.dumps(summary).decode())
    return EXIT_OK


async def _fetch(args: argparse.Namespace, tmp: Path) -> str:
    try:
        async with _session(args) as http:
            url = await find_leader(http, _candidates(args))
            return await _download(http, url + "/v1/backup", tmp)
    except TimeoutError:
        raise CliError(
            f"download did not finish within {args.timeout:g} s", EXIT_UNAVAILABLE
        ) from None


async def _download(http: aiohttp.ClientSession, url: str, path: Path) -> str:
    """Stream ``url`` into ``path`` and fsync it; the SHA-256 of the whole file."""
    digest = hashlib.sha256()
    async with http.get(url) as response:
        if response.status != 200:
            raise CliError(await _error_text(response), _code_for(response.status))
        with path.open("wb") as f:
            async for chunk in response.content.iter_chunked(_CHUNK):
                digest.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
    return digest.hexdigest()


def restore(args: argparse.Namespace) -> int:
    """Verify FILE locally (nothing is sent for a bad file), then have the leader restore it."""
    data = Path(args.file).read_bytes()
    info, _ = verify_backup(data)
    result = asyncio.run(_post_restore(args, data))
    print(orjson.dumps(result).decode())
    print(
        f"restored backup of index {info.index} (term {info.term}): {result.get('keys')} keys",
        file=sys.stderr,
    )
    return EXIT_OK


async def _post_restore(args: argparse.Namespace, data: bytes) -> dict[str, Any]:
    try:
        async with _session(args) as http:
            url = await find_leader(http, _candidates(args))
            headers = {"Content-Type": "application/octet-stream"}
            async with http.post(url + "/v1/restore", data=data, headers=headers) as response:
                if response.status != 200:
                    raise CliError(await _error_text(response), _code_for(response.status))
                result: dict[str, Any] = await response.json()
                return result
    except TimeoutError:
        # The restore may still complete: say so rather than "it failed".
        raise CliError(
            f"no answer within {args.timeout:g} s: the restore may or may not have happened",
            EXIT_UNAVAILABLE,
        ) from None
