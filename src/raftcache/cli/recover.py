"""``raftcache recover --data-dir DIR --force-new-cluster [--id ID] [--url URL] [--dry-run]``:
turn a surviving node's data into a new one-node cluster, when a majority is lost for good.

Rule: the node must be stopped (the data directory is locked while it runs). Recovery appends
one CONFIG entry — ``{id: url}`` as the only voter — right after the last entry the node holds,
with a term above every term it has seen, and records that term as the current one; nothing
else is changed or deleted. A restarted node derives its configuration from its snapshot and
then from every CONFIG entry of its log, the last one winning (``raftcache.raft.core``), so it
comes back as the single voter of a new cluster, elects itself, and its first commit (the new
leader's no-op) commits everything in its log — including entries the old cluster had not
committed yet: that is what "force" means, and why only one survivor may ever be recovered.
Other nodes then join it with ``POST /v1/members``, each from an *empty* data directory.

Exit codes: 0 recovered (or planned, with ``--dry-run``), 1 the data cannot be recovered (locked,
empty, unreadable, no known URL), 2 a usage error (no ``--force-new-cluster``, a bad id or URL,
an id that is not the directory's).
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raftcache.vocabulary import NODE_ID_PATTERN

if TYPE_CHECKING:
    from raftcache.storage.base import RecoveredState

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_ID_RE = re.compile(NODE_ID_PATTERN)
_URL_RE = re.compile(r"https?://[^\s/?#]+")


class RecoverError(Exception):
    """Recovery refused; ``code`` is the exit code (1: the data, 2: the arguments)."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class RecoveryPlan:
    """What recovery found and writes (or would write, with ``--dry-run``)."""

    node_id: str
    url: str
    term: int
    index: int
    last_index: int
    snapshot_index: int
    old_voters: list[str] = field(default_factory=list)
    old_learners: list[str] = field(default_factory=list)


def recover_data_dir(
    data_dir: Path, *, node_id: str | None = None, url: str | None = None, dry_run: bool = False
) -> RecoveryPlan:
    """Make the node in ``data_dir`` the single voter of a new cluster (see the module).

    Args:
        data_dir: the stopped node's data directory.
        node_id: the node's id; must match the directory's identity (default: that identity).
        url: the node's base URL in the new configuration (default: the one its data records).
        dry_run: compute and return the plan without writing anything.

    Raises:
        RecoverError: the data or the arguments do not allow recovery.
    """
    # Imported here: the rest of the CLI should not pay for the storage layer at start-up.
    from raftcache.protocol.configuration import Configuration
    from raftcache.protocol.messages import EntryKind, LogEntry
    from raftcache.storage.base import StorageError, StorageLockedError
    from raftcache.storage.file import FileStorage

    recorded = _recorded_identity(data_dir)
    node_id = node_id or recorded
    if node_id != recorded:
        raise RecoverError(f"{data_dir} belongs to node {recorded}, not {node_id}", EXIT_USAGE)
    try:
        storage = FileStorage(data_dir)
    except StorageLockedError as exc:
        raise RecoverError(f"{exc}; stop the node before recovering it") from None
    except (StorageError, OSError) as exc:
        raise RecoverError(f"cannot open {data_dir}: {exc}") from None
    try:
        storage.bind(node_id)
        plan = _plan(storage.load(), node_id, url, data_dir)
        if not dry_run:
            config = Configuration(voters={node_id: plan.url})
            # Both reach the disk at sync (the log first). A crash before leaves nothing; a crash
            # in between leaves the entry without its term: running recover again appends a
            # new entry with a still higher term, and the last configuration wins.
            storage.set_hard_state(plan.term, None)
            entry = LogEntry(plan.term, plan.index, config.encode(), EntryKind.CONFIG)
            storage.append([entry])
            storage.sync()
        return plan
    except (StorageError, ValueError) as exc:  # ValueError: an undecodable configuration
        raise RecoverError(f"cannot recover {data_dir}: {exc}") from None
    finally:
        storage.close()


def _plan(state: RecoveredState, node_id: str, url: str | None, data_dir: Path) -> RecoveryPlan:
    """What to write, from what the node recovered: the next index, a term above all seen."""
    from raftcache.protocol.configuration import Configuration
    from raftcache.protocol.messages import EntryKind

    snapshot = state.snapshot
    snapshot_index = snapshot.last_index if snapshot is not None else 0
    last = state.entries[-1] if state.entries else None
    last_index = last.index if last is not None else snapshot_index
    last_term = last.term if last is not None else (snapshot.last_term if snapshot else 0)
    if last_index == 0:
        raise RecoverError(f"{data_dir} holds no log and no snapshot: nothing to recover")
    configs = [e for e in state.entries if e.kind == EntryKind.CONFIG]
    if configs:
        current: Configuration | None = Configuration.decode(configs[-1].command)
    else:
        current = snapshot.configuration if snapshot is not None else None
    url = url or (current.address_of(node_id) if current is not None else None)
    if url is None:
        raise RecoverError(f"the data does not record the URL of {node_id}: pass --url")
    return RecoveryPlan(
        node_id=node_id,
        url=url.rstrip("/"),
        term=max(state.term, last_term) + 1,
        index=last_index + 1,
        last_index=last_index,
        snapshot_index=snapshot_index,
        old_voters=sorted(current.voters) if current is not None else [],
        old_learners=sorted(current.learners) if current is not None else [],
    )


def _recorded_identity(data_dir: Path) -> str:
    from raftcache.storage.base import StorageError
    from raftcache.storage.identity import IDENTITY_NAME, decode_identity

    path = data_dir / IDENTITY_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecoverError(
            f"{data_dir} is not a raftcache data directory (no {IDENTITY_NAME})"
        ) from None
    except OSError as exc:
        raise RecoverError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return decode_identity(data, str(path))[0]
    except StorageError as exc:
        raise RecoverError(str(exc)) from None


def add_parser(subparsers: Any) -> None:
    """Register ``raftcache recover``."""
    p = subparsers.add_parser(
        "recover",
        help="turn a surviving node's data into a new one-node cluster",
        description="Disaster recovery when a majority of the cluster is lost for good: make "
        "the (stopped) node in --data-dir the only voter of a new cluster. Its log is kept and "
        "entirely committed once it restarts. Recover ONE survivor only; the other nodes "
        "rejoin it from empty data directories (POST /v1/members). See docs/operations.md.",
    )
    p.add_argument("--data-dir", required=True, type=Path, help="the stopped node's data")
    p.add_argument(
        "--force-new-cluster",
        action="store_true",
        help="required: confirms that the old cluster is gone for good",
    )
    p.add_argument("--id", default=None, help="the node's id (default: the directory's)")
    p.add_argument("--url", default=None, help="its base URL (default: the one recorded)")
    p.add_argument("--dry-run", action="store_true", help="show the plan, write nothing")
    p.set_defaults(func=cmd_recover)


def cmd_recover(args: argparse.Namespace) -> int:
    """Run ``raftcache recover``; returns the exit code."""
    if not args.force_new_cluster:
        _error("refusing without --force-new-cluster (this discards the old cluster)")
        return EXIT_USAGE
    if args.id is not None and not _ID_RE.fullmatch(args.id):
        _error(f"--id {args.id!r}: letters, digits, '.', '_' and '-' only")
        return EXIT_USAGE
    if args.url is not None and not _URL_RE.fullmatch(args.url.rstrip("/")):
        _error(f"--url {args.url!r}: must look like http(s)://HOST:PORT")
        return EXIT_USAGE
    try:
        plan = recover_data_dir(args.data_dir, node_id=args.id, url=args.url, dry_run=args.dry_run)
    except RecoverError as exc:
        _error(str(exc))
        return exc.code
    print(describe(plan, args.data_dir, dry_run=args.dry_run))
    return EXIT_OK


def describe(plan: RecoveryPlan, data_dir: Path, *, dry_run: bool) -> str:
    """The report printed after recovery, with the next steps."""
    verb = "would write" if dry_run else "wrote"
    old = ", ".join(plan.old_voters) or "unknown (bootstrapped from --peers)"
    port = plan.url.rsplit(":", 1)[-1]
    lines = [
        f"{'plan for' if dry_run else 'recovered'} {plan.node_id} in {data_dir}: "
        f"a new one-node cluster {{{plan.node_id}: {plan.url}}}",
        f"  old voters: {old}"
        + (f"; learners: {', '.join(plan.old_learners)}" if plan.old_learners else ""),
        f"  log: snapshot at index {plan.snapshot_index}, last index {plan.last_index} — "
        "all of it will be committed by the new leader",
        f"  {verb}: a configuration entry at index {plan.index}, term {plan.term}",
        "next:",
        f"  raftcache serve --id {plan.node_id} --listen 0.0.0.0:{port} "
        f"--peers {plan.node_id}={plan.url} --data-dir {data_dir}",
        "  then for each new node X (EMPTY data directory, never an old node's data):",
        f"  raftcache serve --id X --listen ... --peers {plan.node_id}={plan.url},X=URL_X "
        "--data-dir NEW_DIR",
        f'  curl -X POST {plan.url}/v1/members -d \'{{"id": "X", "url": "URL_X"}}\'',
    ]
    return "\n".join(lines)


def _error(message: str) -> None:
    print(f"raftcache recover: error: {message}", file=sys.stderr)
