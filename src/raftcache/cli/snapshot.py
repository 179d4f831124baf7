"""``raftcache snapshot save|restore|inspect FILE``: backups of a running cluster's cache.

Rule: a file is never trusted unverified, and a backup is never half-written. ``save`` asks the
leader (``raftcache.cli.snapshot_cluster``) for ``GET /v1/backup``, streams it into a temporary
file beside FILE, fsyncs it, verifies it whole (magic, format, length, checksum, and the
snapshot decoded), and only then renames it over FILE and fsyncs the directory — so FILE is
either the old file or a complete, verified backup. ``restore`` verifies the file locally first
(nothing is sent for a bad file), then ``POST /v1/restore`` on the leader: the cluster replaces
its whole cache with the backup's as one replicated operation (docs/operations.md, "Backup and
restore"). ``inspect`` verifies a file and prints its header.

On a sharded cluster (G > 1 data groups) ``save`` downloads every group's backup from its
leader into one bundle (``raftcache.cache.bundle``), written the same way; each group's part is
consistent at its own log index (every write acknowledged before ``save`` began is in it), not
at one cluster-wide instant. ``restore`` of a bundle needs a cluster of the same G (checked
before anything is sent) and restores one group after another, reporting each; ``--group gN``
saves, or restores, one group's plain backup file. On a one-group cluster nothing changes.

Exit codes: 0 done, 1 the file is not a valid backup (or the download was not), 2 a usage error
or a request the cluster refused (4xx; a bundle of another G), 3 the cluster could not answer
(unreachable, 5xx). A bundle restore that failed for some groups exits with the worst of their
codes, having said which groups were restored and which not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import os
import re
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

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
from raftcache.cache.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_MAGIC_PREFIX,
    BundleFormatError,
    BundleInfo,
    BundlePart,
    VerifiedPart,
    is_bundle,
    verify_bundle,
    write_bundle,
)
from raftcache.cache.snapshot import SnapshotFormatError, read_snapshot
from raftcache.cli.common import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, add_client_options, fail
from raftcache.cli.snapshot_cluster import (
    CliError,
    ClusterView,
    candidates,
    cluster_view,
    download,
    group_query,
    post_restore,
    session,
)

__all__ = ["EXIT_BAD_FILE", "CliError", "add_parser", "verify_bundle_file", "verify_file"]

EXIT_BAD_FILE = 1
#: Default deadline of one save or restore: a large cache takes a while to move.
DEFAULT_TIMEOUT_S = 300.0
#: Groups downloaded at once by a sharded save (each leader encodes its group's snapshot).
PARALLEL_DOWNLOADS = 4
_GROUP = re.compile(r"g(0|[1-9][0-9]{0,4})")

T = TypeVar("T")


def group_name(text: str) -> str:
    """argparse type: a data group's id, ``g0``, ``g1``, …"""
    if not _GROUP.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a group id (g0, g1, …): {text!r}")
    return text


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
        "(written atomically and verified). On a sharded cluster: every group's backup, from "
        "its leader, in one bundle file.",
    )
    restore = sub.add_parser(
        "restore",
        help="replace the cluster's cache with FILE's contents",
        description="Verify FILE, then replace the whole cache of the running cluster with its "
        "contents, as one replicated operation (per group, for a bundle of a sharded cluster).",
    )
    for q, verb in ((save, "save only"), (restore, "restore into")):
        q.add_argument("file", type=Path, metavar="FILE")
        q.add_argument("--url", default=None, help="ask this node (default: find the leader)")
        q.add_argument(
            "--group",
            type=group_name,
            default=None,
            metavar="gN",
            help=f"{verb} this data group of a sharded cluster (a plain backup file)",
        )
        add_client_options(q)
        q.set_defaults(timeout=DEFAULT_TIMEOUT_S)
    save.set_defaults(func=cmd_save)
    restore.set_defaults(func=cmd_restore)
    inspect = sub.add_parser(
        "inspect",
        help="verify FILE and print its header",
        description="Verify a backup file, or a bundle (every group's part).",
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
    """Verify FILE and print its header and number of keys (per group, for a bundle)."""
    with args.file.open("rb") as f:
        bundle = is_bundle(f.read(len(BUNDLE_MAGIC_PREFIX)))
    if not bundle:
        info, keys = verify_file(args.file)
        print(orjson.dumps({**info.provenance(), "keys": keys, "verified": True}).decode())
        return EXIT_OK
    manifest, parts, counts = verify_bundle_file(args.file)
    summary = {
        **_bundle_summary(manifest, parts, counts),
        "sha256": _sha256_of(args.file),
        "verified": True,
    }
    print(orjson.dumps(summary).decode())
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


def verify_bundle_file(path: Path) -> tuple[BundleInfo, list[VerifiedPart], list[int]]:
    """Verify the bundle at ``path`` whole, every part's snapshot decoded; its manifest, its
    parts and each part's number of keys."""
    info, parts = verify_bundle(path.read_bytes())
    counts = []
    for part in parts:
        try:
            counts.append(len(read_snapshot(io.BytesIO(part.snapshot)).records))
        except SnapshotFormatError as exc:
            raise BundleFormatError(f"group {part.part.group}'s snapshot: {exc}") from None
    return info, parts, counts


def _bundle_summary(
    info: BundleInfo, parts: list[VerifiedPart], counts: list[int]
) -> dict[str, Any]:
    return {
        "format": BUNDLE_FORMAT,
        "groups": info.groups,
        "created_at": info.created_at,
        "keys": sum(counts),
        "parts": [
            {
                "group": p.part.group,
                **p.backup.provenance(),
                "keys": keys,
                "bytes": p.part.size,
                "sha256": p.part.sha256,
            }
            for p, keys in zip(parts, counts, strict=True)
        ],
    }


def _sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temporary(target: Path, part: str = "") -> Path:
    """A temporary file beside ``target`` (a rename away from it: same filesystem)."""
    return target.with_name(f".{target.name}.{os.getpid()}{part}.tmp")


def _install(tmp: Path, target: Path) -> None:
    """Rename the verified ``tmp`` over ``target`` and fsync the directory."""
    os.replace(tmp, target)
    _fsync_dir(target.parent)


# --- save -----------------------------------------------------------------------------------


def _target_group(requested: str | None, groups: int) -> str | None:
    """The ``?group=`` to send for ``--group``: none on a one-group cluster (``g0`` is its
    whole keyspace), else the group, once it is seen to exist."""
    if requested is None:
        return None
    if int(requested[1:]) >= groups:
        last = "g0" if groups == 1 else f"g0 … g{groups - 1}"
        raise CliError(
            f"the cluster has {groups} group{'s' if groups > 1 else ''} ({last}): "
            f"there is no {requested}",
            EXIT_USAGE,
        )
    return None if groups == 1 else requested


def _leader_of(view: ClusterView, group: str | None) -> str:
    return view.leader_url() if group is None else view.group_urls()[group]


def _timed(args: argparse.Namespace, what: str, coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except TimeoutError:
        raise CliError(f"{what} within {args.timeout:g} s", EXIT_UNAVAILABLE) from None


def save(args: argparse.Namespace) -> int:
    """Download every group asked for into FILE (see the module docstring)."""
    target: Path = args.file
    if target.is_dir():
        raise CliError(f"{target} is a directory", EXIT_USAGE)
    summary = _timed(args, "download did not finish", _save(args, target))
    print(orjson.dumps(summary).decode())
    return EXIT_OK


async def _save(args: argparse.Namespace, target: Path) -> dict[str, Any]:
    async with session(args) as http:
        view = await cluster_view(http, candidates(args))
        group = _target_group(args.group, view.groups)
        if view.groups > 1 and group is None:
            return await _save_bundle(http, view, target)
        url = _leader_of(view, group) + "/v1/backup" + group_query(group)
        return await _save_backup(http, url, target, args.group)


async def _save_backup(
    http: aiohttp.ClientSession, url: str, target: Path, group: str | None
) -> dict[str, Any]:
    """Download into a temporary file, fsync, verify, rename over FILE, fsync the directory."""
    tmp = _temporary(target)
    try:
        digest = await download(http, url, tmp)
        info, keys = verify_file(tmp)
        _install(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    named = {} if group is None else {"group": group}
    return {**named, **info.provenance(), "keys": keys, "file": str(target), "sha256": digest}


async def _save_bundle(
    http: aiohttp.ClientSession, view: ClusterView, target: Path
) -> dict[str, Any]:
    """Every group's backup into a temporary file of its own (at most ``PARALLEL_DOWNLOADS``
    at once), each verified; then the bundle of them written, fsynced, verified whole, and
    renamed over FILE; the directory fsynced. No temporary file outlives the call."""
    urls = view.group_urls()
    tmp = _temporary(target)
    paths = {gid: _temporary(target, f".{gid}") for gid in urls}
    limit = asyncio.Semaphore(PARALLEL_DOWNLOADS)
    created_at = time.time()

    async def fetch(gid: str) -> str:
        async with limit:
            try:
                return await download(http, urls[gid] + "/v1/backup" + group_query(gid), paths[gid])
            except CliError as exc:
                raise CliError(f"group {gid}: {exc}", exc.code) from None
            except aiohttp.ClientError as exc:
                raise CliError(f"group {gid}: request failed: {exc}", EXIT_UNAVAILABLE) from None

    try:
        digests = await asyncio.gather(*(fetch(gid) for gid in urls), return_exceptions=True)
        for failed in digests:
            if isinstance(failed, BaseException):
                raise failed
        entries, rows = [], []
        for gid, digest in zip(urls, digests, strict=True):
            assert isinstance(digest, str)
            try:
                info, keys = verify_file(paths[gid])
            except (BackupFormatError, SnapshotFormatError) as exc:
                raise BackupFormatError(f"the download of group {gid}: {exc}") from None
            size = paths[gid].stat().st_size
            entries.append(BundlePart(gid, info.index, info.term, size, digest))
            rows.append(
                {"group": gid, **info.provenance(), "keys": keys, "bytes": size, "sha256": digest}
            )
        manifest = BundleInfo(created_at, tuple(entries))
        with tmp.open("wb") as out, contextlib.ExitStack() as stack:
            parts = [stack.enter_context(paths[gid].open("rb")) for gid in urls]
            sha256 = write_bundle(out, manifest, parts)
            out.flush()
            os.fsync(out.fileno())
        verify_bundle_file(tmp)
        _install(tmp, target)
    finally:
        for path in (tmp, *paths.values()):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return {
        "groups": view.groups,
        "created_at": created_at,
        "keys": sum(r["keys"] for r in rows),
        "file": str(target),
        "sha256": sha256,
        "parts": rows,
    }


# --- restore --------------------------------------------------------------------------------

_MAYBE = "no answer within {:g} s: the restore may or may not have happened"


def restore(args: argparse.Namespace) -> int:
    """Verify FILE locally (nothing is sent for a bad file), then have the leader of each
    group it holds restore that group's backup."""
    data = Path(args.file).read_bytes()
    if is_bundle(data):
        info, parts = verify_bundle(data)
        return _timed(args, _MAYBE.format(args.timeout), _restore_bundle(args, info, parts))
    backup, _ = verify_backup(data)
    result = _timed(args, _MAYBE.format(args.timeout), _restore_backup(args, data))
    print(orjson.dumps(result).decode())
    into = "" if args.group is None else f" into group {args.group}"
    print(
        f"restored backup of index {backup.index} (term {backup.term}){into}: "
        f"{result.get('keys')} keys",
        file=sys.stderr,
    )
    return EXIT_OK


async def _restore_backup(args: argparse.Namespace, data: bytes) -> dict[str, Any]:
    async with session(args) as http:
        view = await cluster_view(http, candidates(args))
        if view.groups > 1 and args.group is None:
            raise CliError(
                f"{args.file} is the backup of one group and the cluster has {view.groups} "
                "groups: name the group it restores into with --group gN (a bundle of every "
                "group is what `snapshot save` writes without --group)",
                EXIT_USAGE,
            )
        group = _target_group(args.group, view.groups)
        return await post_restore(http, _leader_of(view, group), data, group)


async def _restore_bundle(
    args: argparse.Namespace, info: BundleInfo, parts: list[VerifiedPart]
) -> int:
    """Each group's part into that group, one after another (a restore holds its file in
    the leader's memory several times over); every group is tried, and reported."""
    async with session(args) as http:
        view = await cluster_view(http, candidates(args))
        if view.groups != info.groups:
            raise CliError(
                f"{args.file} is a bundle of {info.groups} groups and the cluster has "
                f"{view.groups}: a bundle restores only into a cluster of as many groups; "
                "nothing was sent",
                EXIT_USAGE,
            )
        chosen = [p for p in parts if args.group in (None, p.part.group)]
        if not chosen:
            raise CliError(
                f"{args.file} holds groups g0 … g{info.groups - 1}: there is no {args.group}",
                EXIT_USAGE,
            )
        restored: dict[str, dict[str, Any]] = {}
        failed: dict[str, tuple[str, int]] = {}
        for part in chosen:
            gid = part.part.group
            group = None if view.groups == 1 else gid
            try:
                restored[gid] = await post_restore(http, _leader_of(view, group), part.data, group)
            except CliError as exc:
                failed[gid] = (str(exc), exc.code)
            except aiohttp.ClientError as exc:
                failed[gid] = (f"request failed: {exc}", EXIT_UNAVAILABLE)
            except TimeoutError:
                failed[gid] = (_MAYBE.format(args.timeout), EXIT_UNAVAILABLE)
            if gid in restored:
                print(
                    f"restored group {gid}: backup of index {part.backup.index} "
                    f"(term {part.backup.term}), {restored[gid].get('keys')} keys",
                    file=sys.stderr,
                )
            else:
                print(f"group {gid} NOT restored: {failed[gid][0]}", file=sys.stderr)
    done = list(restored)  # in the bundle's order: group order
    summary = {
        "groups": info.groups,
        "restored": done,
        "not_restored": {gid: message for gid, (message, _) in failed.items()},
        "results": restored,
    }
    print(orjson.dumps(summary).decode())
    if not failed:
        return EXIT_OK
    message = f"restored: {', '.join(done) or 'none'}; NOT restored: {', '.join(failed)}"
    return fail("snapshot restore", message, max(code for _, code in failed.values()))
