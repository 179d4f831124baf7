"""The cache state machine: applies committed cache commands, answers local reads.

Rule: pure and deterministic. The outcome of ``apply_entry`` depends only on the log (commands
carry the leader's ``now``; versions are log indices), never on a clock, on I/O or on local
reads, so every replica — and a replica restored from a snapshot — holds identical state.
A bad command never raises: it returns a ``CommandError`` and changes nothing, identically
everywhere. Reads take the reader's ``now``: a key whose ``expires_at <= now`` is invisible.

Semantics (see also docs/cache.md):
- SET stores the value with ``version = index``; ``ttl`` → ``expires_at = now + ttl``, no ttl →
  no expiry. ``if_version`` must equal the current version (0 = missing), ``if_absent`` needs
  the key missing; else PRECONDITION_FAILED carrying the current version. An expired key
  counts as missing for every command.
- DELETE (honouring ``if_version``) → whether a live key was deleted.
- INCR/DECR: a missing key counts as 0; the value must be ASCII decimal within int64 (else
  NOT_A_COUNTER) and so must the result (else COUNTER_OVERFLOW); keeps the key's expiry.
- BATCH: every op is validated first, in order (its entry size, then its condition, judged
  against the state the ops before it would leave); if one fails the batch changes nothing
  and returns that error with the op's index. Otherwise ops apply in order: get → ``bytes |
  None`` (a get is a replicated access, so it refreshes recency), set → version (all sets
  share the entry's index), delete → bool.
- EXPIRE removes the listed keys that are expired at its ``now``; TOUCH marks live keys as
  most recently used. Both are proposed by the leader (``CacheService``).
- Writes that leave the store above ``max_keys``/``max_bytes`` evict (``EntryStore.settle``);
  an entry larger than ``max_bytes`` on its own is refused (VALUE_TOO_LARGE).
- Writes carrying a ``Session`` are exactly-once (``raftcache.cache.sessions``).
- Command version 2 (``raftcache.cache.formats``): TTL changes the expiry alone (a new version,
  the value untouched), FLUSH deletes a prefix in one entry, a batch may hold ``incr`` and
  ``ttl`` ops, a set may keep the key's TTL, FORMAT raises the cluster's command version. An
  entry of a command version above this node's ``max_command_version``, or an unknown op, raises
  ``UnsupportedCommandVersionError`` (fail-stop); one above the cluster's command version is
  refused (COMMAND_VERSION_NOT_ENABLED), identically everywhere.
- RESTORE.BEGIN/CHUNK/COMMIT/ABORT replace the whole cache with a backup's contents, atomically
  at the commit's index (``raftcache.cache.restore``); the backup's scripts join the script
  table.

- Command version 5 (``raftcache.cache.hashes``): hash keys, changed by batch ``hash`` ops; a
  string op that reads or changes a hash's value is WRONG_TYPE (and a hash op on a string). A
  replicated restore of a backup holding hashes is refused below format 5.

- Command version 3 (``raftcache.cache.commands_v3``, docs/divergence.md): CHECK records this
  replica's state digest (``raftcache.cache.digest``) at the entry's index in a small ring and
  returns it (a ``DigestMark``); ALARM raises or clears a replica's divergence alarm
  (replicated state, in snapshots). A snapshot carries the digest of its entries, checked
  against the kept digest when it is taken and against the restored entries when it is
  installed; a mismatch is a *local fault* (``raftcache.cache.alarms``).

- Command version 4 (``raftcache.cache.commands_v4``): EVAL runs a Lua script inside the
  machine (``raftcache.cache.scripting``, its commands in ``raftcache.cache.script_commands``),
  its writes versioned at the entry's index; SCRIPT LOAD/FLUSH change the replicated script
  table (``raftcache.cache.scripts``), which snapshots carry.
- Command version 6 (``raftcache.cache.commands_pubsub``): PUBLISH changes nothing; applying
  it hands (index, channel, message) to the listeners registered with ``on_publish`` (the
  Redis front's subscribers), in log order, and returns the index.

``hits``/``misses`` are node-local: the service counts its own reads there; they are not
replicated and not in snapshots.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any, TypeAlias

from raftcache.cache.alarms import Alarm
from raftcache.cache.commands import (
    BatchCommand,
    DeleteCommand,
    ExpireCommand,
    IncrCommand,
    SetCommand,
    TouchCommand,
    decode_entry,
)
from raftcache.cache.commands_pubsub import PublishCommand
from raftcache.cache.commands_v2 import FlushCommand, FormatCommand, TtlCommand
from raftcache.cache.commands_v3 import ALL_NODES, AlarmCommand, CheckCommand
from raftcache.cache.commands_v4 import (
    EvalCommand,
    ScriptFlushCommand,
    ScriptLoadCommand,
    ScriptResult,
)
from raftcache.cache.digest import DigestMark, DigestRing, digest_hex, full_digest
from raftcache.cache.entries import Item, record_is_hash, record_item
from raftcache.cache.errors import InvalidCommandError
from raftcache.cache.formats import (
    BASE_COMMAND_VERSION,
    COMMAND_VERSION,
    CommandVersion,
    UnsupportedCommandVersionError,
    check_max_command_version,
)
from raftcache.cache.hashes import HASH_VERSION
from raftcache.cache.keyops import (
    apply_batch,
    apply_ttl,
    check_batch,
    condition_holds,
    incr,
    precondition_failed,
    set_expiry,
    too_large,
)
from raftcache.cache.restore import RestoreStaging, Staged, restamp
from raftcache.cache.restore_commands import (
    RestoreAbort,
    RestoreBegin,
    RestoreChunk,
    RestoreCommit,
)
from raftcache.cache.results import (
    CommandError,
    ErrorCode,
    IncrResult,
    RestoreResult,
    Result,
    TtlResult,
)
from raftcache.cache.script_commands import Keyspace, dispatch
from raftcache.cache.scripting import run_script
from raftcache.cache.scripts import ScriptTable
from raftcache.cache.sessions import (
    DEFAULT_MAX_SESSIONS,
    DEFAULT_TTL_S,
    DEFAULT_WINDOW,
    SessionTable,
)
from raftcache.cache.snapshot import (
    SnapshotFormatError,
    SnapshotState,
    SupportsRead,
    encode_snapshot,
    read_snapshot,
    write_snapshot,
)
from raftcache.cache.store import EntryStore
from raftcache.cache.watch import WatchHistory
from raftcache.cache.watch_store import RecordingStore

#: Hears an applied PUBLISH: (log index, channel, message).
PublishListener: TypeAlias = Callable[[int, bytes, bytes], None]


class CacheStateMachine:
    """The replicated cache: keys → versioned values with TTL, LRU bounds and sessions.

    Args:
        max_keys: evict beyond this many keys (None: unbounded).
        max_bytes: evict beyond this many bytes, counted as UTF-8 key length plus value length
            per entry (None: unbounded); a single larger entry is refused.
        session_ttl_s: forget a client session idle this long (judged by command stamps).
        max_sessions: at most this many client sessions (the least recently active go first).
        session_window: results remembered per client (its safe number of outstanding writes).
        watch: the watch history to feed with every change (None: no recording).
        max_command_version: the newest command version this node applies
            (``raftcache.cache.formats``; lower than this build's only to play an older release
            in upgrade tests). ``max_format``, its earlier name, is accepted too.
    """

    def __init__(
        self,
        *,
        max_keys: int | None = None,
        max_bytes: int | None = None,
        session_ttl_s: float = DEFAULT_TTL_S,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        session_window: int = DEFAULT_WINDOW,
        watch: WatchHistory | None = None,
        max_command_version: CommandVersion = COMMAND_VERSION,
        max_format: CommandVersion | None = None,
    ) -> None:
        if max_format is not None:
            max_command_version = max_format
        self.max_command_version = check_max_command_version(max_command_version)
        # The cluster's, replicated (raised by FORMAT).
        self._command_version: CommandVersion = BASE_COMMAND_VERSION
        # With a watch history, the store records every change for it (docs/api.md, Watches).
        self._recorder = (
            None if watch is None else RecordingStore(watch, max_keys=max_keys, max_bytes=max_bytes)
        )
        self._store = (
            EntryStore(max_keys=max_keys, max_bytes=max_bytes)
            if self._recorder is None
            else self._recorder
        )
        self.watch_history = watch
        self._sessions = SessionTable(
            ttl_s=session_ttl_s, max_sessions=max_sessions, window=session_window
        )
        self._restore = RestoreStaging()
        self._last_index = 0
        self.hits = 0
        self.misses = 0
        # Divergence detection (docs/divergence.md): replicated alarms, node-local digests
        # recorded at CHECK entries, and faults this replica found in itself.
        self._alarms: dict[str, Alarm] = {}
        self.digests = DigestRing()
        self.digest_checks = 0
        self.local_faults: list[str] = []
        #: Snapshots restored into this machine (node-local; the divergence monitor asks the
        #: leader for a check after each).
        self.snapshot_restores = 0
        #: This replica's node id, when known (set by ``CacheService``): an ALARM clearing it
        #: also clears its local faults.
        self.node_id: str | None = None
        #: The replicated script table (format 4): SHA-1 → body, for EVALSHA.
        self.scripts = ScriptTable()
        #: Who hears each applied PUBLISH (``on_publish``): node-local, never in snapshots.
        self._publish_listeners: list[PublishListener] = []
        self._handlers: dict[type[Any], Callable[[int, Any], Result]] = {
            SetCommand: self._set,
            DeleteCommand: self._delete,
            IncrCommand: self._incr,
            BatchCommand: self._batch,
            ExpireCommand: self._expire,
            TouchCommand: self._touch,
            TtlCommand: self._ttl,
            FlushCommand: self._flush,
            FormatCommand: self._raise_command_version,
            CheckCommand: self._check,
            AlarmCommand: self._alarm,
            EvalCommand: self._eval,
            ScriptLoadCommand: lambda _, cmd: self.scripts.add(cmd.script),
            ScriptFlushCommand: lambda _, cmd: self.scripts.clear(),
            PublishCommand: self._publish,
            RestoreBegin: self._restore.begin,
            RestoreChunk: lambda _, cmd: self._restore.chunk(cmd),
            RestoreCommit: self._restore_commit,
            RestoreAbort: lambda _, cmd: self._restore.abort(cmd),
        }

    @property
    def command_version(self) -> CommandVersion:
        """The cluster's command version as of the last applied entry (replicated)."""
        return self._command_version

    @property
    def command_format(self) -> CommandVersion:
        """``command_version`` under its earlier name."""
        return self._command_version

    @property
    def max_format(self) -> CommandVersion:
        """``max_command_version`` under its earlier name."""
        return self.max_command_version

    @property
    def last_index(self) -> int:
        """Log index of the last command applied (or restored)."""
        return self._last_index

    def __len__(self) -> int:
        return len(self._store)

    # --- applying ---------------------------------------------------------------------------

    def apply_entry(self, index: int, command: bytes) -> Result:
        """Apply the committed ``command`` at log ``index`` (indices must increase)."""
        if index <= self._last_index:
            raise ValueError(f"entry {index} applied after entry {self._last_index}")
        self._last_index = index
        try:
            return self._apply_command(index, command)
        finally:
            if self._recorder is not None:  # the one hook: this entry's changes, to the watches
                self._recorder.commit(index)

    def _apply_command(self, index: int, command: bytes) -> Result:
        try:
            # UnsupportedCommandVersionError propagates: the driver fails stop (never skips).
            cmd, needed = decode_entry(command, self.max_command_version)
        except InvalidCommandError as exc:
            return CommandError(ErrorCode.INVALID_COMMAND, str(exc))
        if needed > self._command_version and not isinstance(cmd, FormatCommand):
            # Only a leader that skipped its check proposes this; refused alike everywhere.
            return CommandError(
                ErrorCode.COMMAND_VERSION_NOT_ENABLED,
                f"command format {needed} is not enabled (the cluster runs format "
                f"{self._command_version})",
                needed,
            )
        session = getattr(cmd, "session", None)
        if session is None:
            return self._handlers[type(cmd)](index, cmd)
        answer = self._sessions.check(session.client_id, session.seq, cmd.now)
        if answer is not None:
            return answer
        result = self._handlers[type(cmd)](index, cmd)
        self._sessions.record(session.client_id, session.seq, cmd.now, result)
        return result

    def apply(self, command: bytes) -> Result:
        """``StateMachine.apply`` for drivers without ``apply_entry``: uses the next index
        after the last one applied as the version (still unique and replicated)."""
        return self.apply_entry(self._last_index + 1, command)

    def _set(self, index: int, cmd: SetCommand) -> Result:
        store, now = self._store, cmd.now
        if not store.fits(cmd.key, len(cmd.value)):
            return too_large(cmd.key, len(cmd.value))
        if cmd.if_version is not None or cmd.if_absent:
            current = store.version(cmd.key, now)
            if not condition_holds(current, cmd.if_version, cmd.if_absent):
                return precondition_failed(current)
        store.put(cmd.key, cmd.value, index, set_expiry(store, cmd, now), now)
        store.settle(now)
        return index

    def _delete(self, index: int, cmd: DeleteCommand) -> Result:
        store, now = self._store, cmd.now
        if cmd.if_version is not None:
            current = store.version(cmd.key, now)
            if current != cmd.if_version:
                return precondition_failed(current)
        return store.remove(cmd.key, now)

    def _incr(self, index: int, cmd: IncrCommand) -> Result:
        value = incr(self._store, index, cmd.key, cmd.by, cmd.now)
        if isinstance(value, CommandError):
            return value
        self._store.settle(cmd.now)
        return IncrResult(value, index)

    def _batch(self, index: int, cmd: BatchCommand) -> Result:
        error = check_batch(self._store, index, cmd)
        return error if error is not None else apply_batch(self._store, index, cmd)

    def _ttl(self, index: int, cmd: TtlCommand) -> Result:
        store, op, now = self._store, cmd.op, cmd.now
        if op.if_version is not None:
            current = store.version(op.key, now)
            if current != op.if_version:
                return precondition_failed(current)
        changed, version = apply_ttl(store, index, op, now)
        return TtlResult(changed, version)

    def _flush(self, index: int, cmd: FlushCommand) -> Result:
        return self._store.flush(cmd.prefix, cmd.now)

    def _raise_command_version(self, index: int, cmd: FormatCommand) -> Result:
        # decode() already stopped this node if the version is above its own ceiling.
        self._command_version = max(self._command_version, cmd.version)
        return self._command_version

    def _check(self, index: int, cmd: CheckCommand) -> Result:
        digest = self._store.digest
        self.digests.record(index, digest)
        self.digest_checks += 1
        return DigestMark(index, digest)

    def on_publish(self, listener: PublishListener) -> Callable[[], None]:
        """Call ``listener(index, channel, message)`` for every PUBLISH this replica applies,
        in log order, from within ``apply_entry``; returns the function that removes it. A
        listener must return at once and never raise: what it does is outside the replicated
        state (a raise is swallowed: the entry applies alike everywhere)."""
        self._publish_listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._publish_listeners.remove(listener)

        return remove

    def _publish(self, index: int, cmd: PublishCommand) -> Result:
        # No state changes: the message is handed to this node's listeners, not stored.
        for listener in list(self._publish_listeners):
            with contextlib.suppress(Exception):
                listener(index, cmd.channel, cmd.message)
        return index

    def _alarm(self, index: int, cmd: AlarmCommand) -> Result:
        alarms = self._alarms
        if not cmd.clear:
            alarms.setdefault(cmd.node_id, Alarm(cmd.node_id, cmd.reason, index, cmd.now))
        else:
            if cmd.node_id == ALL_NODES:
                alarms.clear()
            else:
                alarms.pop(cmd.node_id, None)
            if cmd.node_id in (ALL_NODES, self.node_id):  # the operator rebuilt this replica
                self.local_faults.clear()
        return len(alarms)

    def _eval(self, index: int, cmd: EvalCommand) -> Result:
        """Run a script (``raftcache.cache.scripting``): its writes stay even if it fails
        later, as in Redis, and every replica stops it at the same instruction."""
        self.scripts.add(cmd.script)
        keyspace = Keyspace(self._store, index, cmd.now, cmd.slot, cmd.read_only)
        reply = run_script(
            cmd.script,
            [key.encode() for key in cmd.keys],
            cmd.args,
            lambda args: dispatch(keyspace, args),
            instruction_limit=cmd.instructions,
            memory_limit=cmd.memory,
        )
        if keyspace.wrote:
            self._store.settle(cmd.now)
        return ScriptResult(reply)

    def script(self, sha: str) -> bytes | None:
        """The body of the loaded script ``sha`` (40 hex, any case), or None (local read)."""
        return self.scripts.get(sha)

    def _expire(self, index: int, cmd: ExpireCommand) -> Result:
        # Sessions are swept here too: EXPIRE is the leader's periodic housekeeping entry.
        self._sessions.sweep(cmd.now)
        self._restore.sweep(cmd.now)
        return self._store.expire(cmd.keys, cmd.now)

    def _touch(self, index: int, cmd: TouchCommand) -> Result:
        store, now = self._store, cmd.now
        return sum(store.touch(key, now) for key in cmd.keys)

    def _restore_commit(self, index: int, cmd: RestoreCommit) -> Result:
        """Swap the staged backup in (see ``raftcache.cache.restore``): all or nothing."""
        data = self._restore.take(cmd)
        if isinstance(data, CommandError):
            return data
        try:
            state = read_snapshot(io.BytesIO(data))
            scripts = ScriptTable.from_wire(state.scripts or [])
        except (SnapshotFormatError, ValueError) as exc:
            return CommandError(ErrorCode.INVALID_COMMAND, f"restore: {exc}")
        store, now = self._store, cmd.now
        if self._command_version < HASH_VERSION and any(
            map(record_is_hash, state.records.values())
        ):
            # Replicas below format 5 would read the hashes as strings: refused alike everywhere.
            return CommandError(
                ErrorCode.COMMAND_VERSION_NOT_ENABLED,
                f"restore: the backup holds hashes, which need command format {HASH_VERSION} "
                f"(the cluster runs format {self._command_version})",
                HASH_VERSION,
            )
        # Only now, past every refusal: a refused restore changes nothing, not even the table.
        for body in scripts.to_wire():  # the backup's scripts join the table (format 4)
            self.scripts.add(body)
        records, expired, too_large = restamp(state.records, index, now, store.fits)
        evictions = store.evictions
        store.load(records, store.bytes_peak, evictions, store.expirations)
        store.settle(now)
        return RestoreResult(len(store), expired, too_large, store.evictions - evictions, index)

    # --- reads (local, pure) ------------------------------------------------------------------

    def get(self, key: str, now: float) -> Item | None:
        """The live entry of ``key`` at the reader's ``now``, or None."""
        record = self._store.live(key, now)
        return None if record is None else record_item(record)

    def list_keys(
        self, prefix: str, after: str | None, limit: int, now: float
    ) -> tuple[list[str], str | None]:
        """Live keys with ``prefix``, strictly after ``after``, at most ``limit`` (≥ 1), in
        key order; plus the ``after`` cursor of the next page, or None on the last page."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        return self._store.list_keys(prefix, after, limit, now)

    def random_key(self, now: float, draw: Callable[[int], int]) -> str | None:
        """A live key at the reader's ``now``, drawn by ``draw(n)`` (an int in ``[0, n)``: the
        reading node's own random source — a read changes no state, so replicas need not
        agree on it), or None when no key is live."""
        return self._store.random_key(draw, now)

    def expired_keys(self, now: float, limit: int) -> list[str]:
        """Up to ``limit`` keys whose ``expires_at <= now``, earliest first (for the leader's
        EXPIRE proposals)."""
        return self._store.expired_keys(now, limit)

    # --- divergence ---------------------------------------------------------------------------

    @property
    def digest(self) -> int:
        """The digest of the entries now (kept incrementally; ``raftcache.cache.digest``)."""
        return self._store.digest

    def full_digest(self) -> int:
        """The digest recomputed from the entries (O(n))."""
        return self._store.full_digest()

    @property
    def alarms(self) -> dict[str, Alarm]:
        """The replicated divergence alarms, by node id (a copy)."""
        return dict(self._alarms)

    def distrust(self, node_id: str) -> str | None:
        """Why the replica ``node_id`` (this one) must not serve reads, or None."""
        alarm = self._alarms.get(node_id)
        if alarm is not None:
            return f"divergence alarm raised at index {alarm.index}: {alarm.reason}"
        if self.local_faults:
            return self.local_faults[-1]
        return None

    def add_local_fault(self, reason: str) -> None:
        """Note a fault this replica found in its own state (node-local; see ``alarms``)."""
        if reason not in self.local_faults:
            self.local_faults.append(reason)
            del self.local_faults[:-8]

    def clear_local_faults(self) -> None:
        self.local_faults.clear()

    def record_reads(self, hits: int, misses: int) -> None:
        """Count this node's reads (node-local statistics)."""
        self.hits += hits
        self.misses += misses

    def stats(self) -> dict[str, Any]:
        """The ``"cache"`` part of ``/v1/stats``. ``hits``, ``misses`` and ``hit_rate`` count
        this node's reads only; everything else is replicated state."""
        store = self._store
        reads = self.hits + self.misses
        return {
            "keys": len(store),
            "bytes": store.bytes,
            "bytes_peak": store.bytes_peak,
            "max_keys": store.max_keys,
            "max_bytes": store.max_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / reads if reads else 0.0,
            "evictions": store.evictions,
            "expirations": store.expirations,
            "sessions": len(self._sessions),
            "restore_staged_bytes": self._restore.staged_bytes,
            "divergence_alarms": len(self._alarms),
            "digest_checks": self.digest_checks,
            "digest_local_faults": len(self.local_faults),
        }

    # --- snapshots ----------------------------------------------------------------------------

    def _capture(self) -> SnapshotState:
        """The state now, as copies nothing else will touch: a shallow copy of the map (its
        records are immutable bytes; ~45 ms at 1 M keys) and the small session table."""
        store = self._store
        counters = {
            "evictions": store.evictions,
            "expirations": store.expirations,
            "bytes_peak": store.bytes_peak,
            "sessions_dropped": self._sessions.dropped,
        }
        if (
            self._command_version > BASE_COMMAND_VERSION
        ):  # absent = 1: older snapshots stay as they were
            counters["command_format"] = self._command_version
        state = SnapshotState(
            self._last_index,
            counters,
            self._sessions.to_wire(),
            store.records(),
            self._restore.to_wire(),
            [alarm.to_wire() for alarm in self._alarms.values()] or None,
            self.scripts.to_wire() or None,
        )
        # The kept digest, to be checked against the entries by ``_seal`` (in the worker).
        counters["digest"] = store.digest
        return state

    def _seal(self, state: SnapshotState) -> SnapshotState:
        """In the worker thread, before encoding: recompute the digest of the captured entries
        (the encoder walks them anyway) and carry that one. One that differs from the kept
        digest means the entries changed without the store knowing (a bug, or memory altered
        behind its back): a local fault (``raftcache.cache.alarms``), this replica stops
        serving reads."""
        kept = state.counters["digest"]
        actual = full_digest(state.records)
        if actual != kept:
            self.add_local_fault(
                f"snapshot at index {state.index}: entries digest {digest_hex(actual)} differs "
                f"from the kept digest {digest_hex(kept)} (state changed behind the store)"
            )
        state.counters["digest"] = actual
        return state

    def prepare_snapshot(self) -> Callable[[], bytes]:
        """Capture the state now (call on the event loop) and return a function that encodes
        it, meant to run in a worker thread."""
        state = self._capture()
        return lambda: encode_snapshot(self._seal(state))

    def prepare_snapshot_stream(self) -> Callable[[Callable[[bytes], object]], None]:
        """Like ``prepare_snapshot``, but the returned function hands the snapshot to a
        ``write(chunk)`` callable piece by piece (e.g. a storage ``SnapshotWriter.write``), so
        the whole snapshot never has to exist as one ``bytes``."""
        state = self._capture()
        return lambda write: write_snapshot(self._seal(state), write)

    def snapshot(self) -> bytes:
        """The snapshot of the current state (``StateMachine.snapshot``)."""
        return self.prepare_snapshot()()

    def restore(self, data: bytes) -> None:
        """Replace the whole state with a snapshot's; raises ``SnapshotFormatError`` (and
        changes nothing) if the data is not a snapshot of a known format."""
        self.restore_stream(io.BytesIO(data))

    def restore_stream(self, stream: SupportsRead) -> None:
        """``restore`` from a binary file-like object, read run by run."""
        state = read_snapshot(stream)
        try:
            staged = None if state.restore is None else Staged.from_wire(state.restore)
            alarms = [Alarm.from_wire(wire) for wire in state.alarms or ()]
            scripts = ScriptTable.from_wire(state.scripts or [])
        except (ValueError, TypeError) as exc:
            raise SnapshotFormatError(
                f"malformed staged restore or alarms in the snapshot: {exc}"
            ) from None
        counters = state.counters
        version = counters.get("command_format", BASE_COMMAND_VERSION)
        ceiling = self.max_command_version
        if type(version) is not int or version > ceiling:
            raise UnsupportedCommandVersionError(
                f"the snapshot at index {state.index} was taken in a cluster running command "
                f"format {version!r}; this node applies formats up to {ceiling}: "
                "upgrade it"
            )
        self._command_version = version
        self._sessions.load_wire(state.sessions, counters.get("sessions_dropped", 0))
        self._store.load(
            state.records,
            counters.get("bytes_peak", 0),
            counters.get("evictions", 0),
            counters.get("expirations", 0),
        )
        self._restore.staged = staged
        self._last_index = state.index
        self._alarms = {alarm.node_id: alarm for alarm in alarms}
        self.scripts = scripts
        self.digests.clear()
        self.snapshot_restores += 1
        carried = counters.get("digest")  # absent in snapshots of older releases
        if carried is not None and carried != self._store.digest:  # load() recomputed it
            self.add_local_fault(
                f"snapshot at index {state.index}: restored entries digest "
                f"{digest_hex(self._store.digest)} differs from the digest it carries "
                f"{digest_hex(carried)} (a corrupted snapshot)"
            )
        if self._recorder is not None:  # the watch history restarts at the snapshot
            self._recorder.commit(state.index)

    def check_invariants(self) -> None:
        """Assert internal consistency (for tests; O(n))."""
        self._store.check_invariants()
