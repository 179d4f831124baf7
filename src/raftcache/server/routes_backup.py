"""Handlers of backup and restore: ``GET /v1/backup`` and ``POST /v1/restore``.

Rule: both need the leader (a follower's request is forwarded like a write; the CLI asks the
leader directly so a large file is not held by a forwarding node). A backup is taken at a
linearizable point (``raftcache.cache.backup_service``) and streamed as a self-verifying backup
file (``raftcache.cache.backup``). A restore body is verified whole before anything is
proposed: a damaged, truncated, foreign or too-new file is refused with a 400 naming the
problem, and the cluster keeps serving as before. Both go through the client API's auth: a
backup is a read (the read-only token may take one), a restore is a write.

A restore body is bounded by ``--max-inflight-bytes`` (the node's budget of body bytes held at
once, which this body is charged to like any other).
"""

from __future__ import annotations

from aiohttp import web

from raftcache.cache.backup import (
    TRAILER_SIZE,
    BackupFormatError,
    backup_head,
    encode_backup,
)
from raftcache.cache.backup_service import Backups, RestoreFailedError
from raftcache.cache.snapshot import SnapshotFormatError
from raftcache.server.bodies import read_body
from raftcache.server.context import context_of, request_context
from raftcache.server.errors import ApiError
from raftcache.server.results import json_response

BACKUP_CONTENT_TYPE = "application/octet-stream"
INDEX_HEADER = "X-Raftcache-Backup-Index"
TERM_HEADER = "X-Raftcache-Backup-Term"


def _backups(request: web.Request) -> Backups:
    backups = getattr(request_context(request).service, "backups", None)
    if not isinstance(backups, Backups):
        raise ApiError(501, "this node's cache service does not support backups")
    return backups


async def get_backup(request: web.Request) -> web.StreamResponse:
    """``GET /v1/backup``: a backup file of the cluster's cache, taken on the leader."""
    info, snapshot = await _backups(request).capture()
    response = web.StreamResponse(
        headers={
            "Content-Type": BACKUP_CONTENT_TYPE,
            "Content-Disposition": f'attachment; filename="raftcache-{info.index}.backup"',
            INDEX_HEADER: str(info.index),
            TERM_HEADER: str(info.term),
        }
    )
    response.content_length = len(backup_head(info)) + info.snapshot_bytes + TRAILER_SIZE
    await response.prepare(request)
    for chunk in encode_backup(info, snapshot):
        await response.write(chunk)
    await response.write_eof()
    return response


async def post_restore(request: web.Request) -> web.Response:
    """``POST /v1/restore`` with a backup file as the body: replace the cache's contents."""
    backups = _backups(request)
    limit = context_of(request).settings.admission.max_inflight_bytes
    data = await read_body(request, limit, "backup")
    if not data:
        raise ApiError(400, "empty body: send a backup file (raftcache snapshot save)")
    try:
        info, result = await backups.restore(data)
    except (BackupFormatError, SnapshotFormatError) as exc:
        raise ApiError(400, f"bad backup file: {exc}") from None
    except RestoreFailedError as exc:
        raise ApiError(409, f"restore refused by the cluster: {exc}") from None
    return json_response(
        {
            "restored": True,
            "keys": result.keys,
            "expired": result.expired,
            "too_large": result.too_large,
            "evicted": result.evicted,
            "version": result.version,
            "backup": info.provenance(),
        }
    )


def add_backup_routes(app: web.Application) -> None:
    """Register the backup and restore routes on ``app``."""
    app.router.add_get("/v1/backup", get_backup)
    app.router.add_post("/v1/restore", post_restore)
