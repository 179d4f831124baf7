"""What a store learnt from the cluster map, kept across its restarts: ``<data-dir>/KNOWN``.

Rule: only *where to look* — every store's address and the stores holding the meta group's
replicas, its leader first, as the last map read said — never membership: which replicas a
store hosts is its ledger's and ``SHARDS``' to say (``raftcache.store.ledger``), and a group's
members are its configuration's. The meta agent rewrites the file when the map it applies
names other addresses or meta stores (``MetaAgent``'s ``on_learn``, called in a thread: the
write syncs, off the event loop the groups run on); ``raftcache serve`` reads
it at start, so a store that was down while the meta group's replicas moved away from every
store its ``SHARDS`` names — and those stores were removed — still reaches the cluster. A
missing or damaged file is an empty one (the store falls back to ``SHARDS`` and ``--peers``):
it holds hints, nothing that safety rests on.

On disk: JSON ``{"format": 1, "urls": {id: url}, "meta": [id, …]}``, replaced atomically
(``storage.fsio.atomic_write``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from raftcache.storage.fsio import FileOps, atomic_write

KNOWN_FILE: Final = "KNOWN"
FORMAT: Final = 1

log = logging.getLogger("raftcache.store.known")


@dataclass(frozen=True)
class Known:
    """Store id → base URL, and the meta group's stores (its leader first when known)."""

    urls: Mapping[str, str] = field(default_factory=dict)
    meta: tuple[str, ...] = ()


def read_known(data_dir: Path) -> Known:
    """The record in ``data_dir``, or an empty one (missing, or damaged: logged)."""
    path = data_dir / KNOWN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Known()
    except (OSError, ValueError) as exc:
        log.warning("known stores not read", extra={"path": str(path), "why": repr(exc)})
        return Known()
    urls, meta = (data.get("urls"), data.get("meta")) if isinstance(data, dict) else (None, None)
    if (
        not isinstance(data, dict)
        or data.get("format") != FORMAT
        or not isinstance(urls, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in urls.items())
        or not isinstance(meta, list)
        or not all(isinstance(m, str) for m in meta)
    ):
        log.warning("known stores not read", extra={"path": str(path), "why": "malformed"})
        return Known()
    return Known(dict(urls), tuple(meta))


def write_known(data_dir: Path, urls: Mapping[str, str], meta: Sequence[str]) -> None:
    """Replace the record in ``data_dir`` (durable when this returns)."""
    body = {"format": FORMAT, "urls": dict(sorted(urls.items())), "meta": list(meta)}
    data = (json.dumps(body, indent=1) + "\n").encode()
    atomic_write(FileOps(), str(data_dir / KNOWN_FILE), data, fsync=True)
