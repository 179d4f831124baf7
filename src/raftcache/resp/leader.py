"""``LeaderBackend``: the RESP commands' cache operations, sent to the leader's HTTP client API.

Rule: each operation is exactly one HTTP request to the leader (docs/api.md routes), and the HTTP
answer maps back to the exception ``CacheService`` would have raised there: 412 →
``PreconditionFailedError(version)``, 409 → ``NotACounterError``/``CounterOverflowError``, 413 →
``ValueTooLargeError``, 400 → ``InvalidCommandError``, 503 → ``UnavailableError`` (the API's
rule: a 503 means nothing happened), 504 → ``IndeterminateWriteError``. A request that never
connected certainly did nothing (``UnavailableError``); one that connected and got no answer, or
any other status (a 500, a proxy's 502), may have been applied, so a write then is
``IndeterminateWriteError`` — never ``TRYAGAIN``, which Redis Cluster clients retry by
themselves.

One thing the HTTP API does not return is a key's expiry. ``items`` gets the value and version
from the leader (``GET`` → ``ETag``), then reads the expiry from this node's own replica once it
has applied that version: every replica holds the same ``expires_at`` for the same version,
because the version is the log index of the write that set it.

On a sharded store, a group this store holds no replica of (``replica=None``) is reached at one
of the group's stores (``raftcache.resp.shards.RemoteRouter``), and two things change. Requests
carry ``X-Raftcache-Forwarded: 1``, so a store that is not the group's leader answers 503 with
``X-Raftcache-Not-Leader: <hint>`` (certainly not applied) rather than forwarding once more:
that, and a connection that never opened, raise ``LeaderMovedError`` with the hint, and the
router tries the hint. And with no replica to read an expiry from, ``items`` takes it from the
answer's ``X-Raftcache-Expires-At`` header (epoch seconds, or ``never``); a store whose HTTP API
does not send it cannot serve TTL, PTTL or a transaction for such a key, which then answers an
error naming the header rather than guess (a rewrite would drop the key's TTL). The whole-keyspace
operations of a store's backend (listing, counting, flushing) are scoped to its group: they
send ``group=<id>`` and keep only the group's keys of what comes back; DBSIZE reads the group's
figure from the store's ``/v1/stats`` (``groups``), as it reads the leader's ``cache`` today.
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import orjson

from raftcache.cache.commands import BatchOp, DeleteOp, GetOp, SetOp
from raftcache.cache.commands_v2 import IncrOp, TtlOp
from raftcache.cache.commands_v4 import reply_from_json
from raftcache.cache.entries import HASH, Item
from raftcache.cache.errors import (
    CounterOverflowError,
    HashValueError,
    InvalidCommandError,
    NotACounterError,
    PreconditionFailedError,
    ValueTooLargeError,
    WrongTypeError,
)
from raftcache.cache.formats import CommandVersionNotEnabledError
from raftcache.cache.hashes import HashOp
from raftcache.cache.results import BatchItem
from raftcache.cache.scripting import Reply as ScriptReply
from raftcache.resp.backend import ReplicaPort
from raftcache.resp.errors import IndeterminateWriteError, UnavailableError
from raftcache.resp.protocol import RespError
from raftcache.resp.values import HashValue
from raftcache.slots import key_group
from raftcache.vocabulary import EXPIRES_AT_HEADER, VALUE_TYPE_HEADER

MGET_CHUNK: Final = 1000  # the HTTP API's default --max-batch-ops
LIST_LIMIT_MAX: Final = 1000
EXPIRY_WAIT_S: Final = 2.0
_RANDOM: Final = random.SystemRandom()  # RANDOMKEY's draw: node-local, not replicated
# The HTTP API's forwarding headers (``raftcache.server.forwarding``, a layer above this one).
FORWARDED_HEADER: Final = "X-Raftcache-Forwarded"
NOT_LEADER_HEADER: Final = "X-Raftcache-Not-Leader"
#: A key's expiry on ``GET /v1/keys/{key}``: epoch seconds, or ``never``.
EXPIRES_HEADER: Final = EXPIRES_AT_HEADER


class LeaderMovedError(UnavailableError):
    """The node asked certainly did not take the request: it could not be reached, or it is not
    the leader (``hint``: the leader it knows of, if any). A retry elsewhere is safe."""

    def __init__(self, hint: str | None, message: str) -> None:
        super().__init__(message)
        self.hint = hint


class GroupScope:
    """The data group a backend's whole-keyspace operations are confined to, on a sharded
    store: ``group`` is its id, sent as ``group=<id>``; ``index`` and ``groups`` tell its keys
    (``raftcache.slots.key_group(key, groups) == index``)."""

    __slots__ = ("group", "groups", "index")

    def __init__(self, group: str, index: int, groups: int) -> None:
        self.group, self.index, self.groups = group, index, groups

    def holds(self, key: str) -> bool:
        return key_group(key, self.groups) == self.index


class LeaderBackend:
    """``Backend`` that sends every operation to the leader at ``base_url``.

    Args:
        session: the HTTP client session (owned by the RESP server).
        base_url: the leader's client API, e.g. ``http://127.0.0.1:8001``.
        token: the client token to present (``Authorization: Bearer``), if any.
        timeout_s: total timeout of one request.
        replica: this node's state machine (expiry of a version the leader returned); None on
            a store that holds no replica of the group (the expiry then comes from the
            answer's ``X-Raftcache-Expires-At``).
        applied: this node's last applied log index (with ``replica``).
        clock: wall-clock seconds (judges expiry on the local replica).
        forwarded: mark requests as forwarded, so that a node that is not the leader answers
            "not the leader" (``LeaderMovedError``) instead of forwarding again.
        scope: the one group whose keys the listing, counting and flushing concern (a store's
            group held elsewhere), or None for all of the node's keys.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        token: str | None,
        timeout_s: float,
        replica: ReplicaPort | None,
        applied: Callable[[], int] | None = None,
        clock: Callable[[], float],
        forwarded: bool = False,
        scope: GroupScope | None = None,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        if forwarded:
            self._headers[FORWARDED_HEADER] = "1"
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._replica = replica
        self._applied = applied or (lambda: 0)
        self._clock = clock
        self._scope = scope

    # --- reads ----------------------------------------------------------------------------

    async def values(
        self, keys: Sequence[str], consistency: str, *, touch: bool = True
    ) -> list[bytes | None]:
        out: list[bytes | None] = []
        query = _read_query(consistency, touch)
        # Chunks are read in order, so a later chunk never sees an older state than an earlier.
        for start in range(0, len(keys), MGET_CHUNK):
            chunk = list(keys[start : start + MGET_CHUNK])
            body = await self._json("POST", "/v1/mget" + query, {"keys": chunk}, write=False)
            values = [None if v is None else base64.b64decode(v) for v in body["values"]]
            for position in body.get("hashes", ()):  # their fields, as the cache encodes them
                values[position] = HashValue(values[position] or b"")
            out.extend(values)
        return out

    async def items(
        self, keys: Sequence[str], consistency: str, *, touch: bool = True
    ) -> list[Item | None]:
        query = _read_query(consistency, touch)
        return list(await asyncio.gather(*(self._item(key, query) for key in keys)))

    async def _item(self, key: str, query: str) -> Item | None:
        for _ in range(8):
            status, headers, body = await self._request(
                "GET", f"/v1/keys/{_q(key)}{query}", None, write=False
            )
            if status == 404:
                return None
            _raise_for(status, body, write=False, headers=headers)
            version = int(headers.get("ETag", '"0"').strip('"'))
            if headers.get(VALUE_TYPE_HEADER) == HASH:
                body = HashValue(body)
            if self._replica is None:
                return Item(body, version, _expiry_of(headers))
            expires_at, settled = await self._expiry(key, version)
            if settled:
                return Item(body, version, expires_at)
        raise UnavailableError("the key keeps changing while its expiry is read; try again")

    async def _expiry(self, key: str, version: int) -> tuple[float | None, bool]:
        """``expires_at`` of ``key`` at ``version`` from the local replica, once applied here;
        ``settled`` is False when the replica already moved past that version (read again)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + EXPIRY_WAIT_S
        assert self._replica is not None
        while True:
            item = self._replica.get(key, self._clock())
            if item is not None and item.version == version:
                return item.expires_at, True
            if item is not None and item.version > version:
                return None, False  # rewritten since: read again
            if item is None and self._applied() >= version:
                return None, False  # deleted or expired since: read again
            if loop.time() >= deadline:
                raise UnavailableError("this node lags the leader; try again")
            await asyncio.sleep(0.005)

    async def list_keys(
        self, prefix: str, after: str | None, limit: int, consistency: str
    ) -> tuple[list[str], str | None]:
        query = f"?limit={min(limit, LIST_LIMIT_MAX)}&consistency={consistency}"
        if prefix:
            query += f"&prefix={_q(prefix)}"
        if after is not None:
            query += f"&after={_q(after)}"
        scope = self._scope
        if scope is not None:
            query += f"&group={_q(scope.group)}"
        body = await self._json("GET", "/v1/keys" + query, None, write=False)
        keys, next_key = list(body["keys"]), body["next"]
        if scope is not None:  # a store that lists every group's keys: keep this group's
            keys = [key for key in keys if scope.holds(key)]
        return keys, next_key

    async def random_key(self, consistency: str) -> str | None:
        """The HTTP API has no random read: a key drawn from the first page of the listing
        (up to ``LIST_LIMIT_MAX`` keys in key order; docs/resp.md says so)."""
        keys, _ = await self.list_keys("", None, LIST_LIMIT_MAX, consistency)
        return _RANDOM.choice(keys) if keys else None

    async def dbsize(self, consistency: str) -> int:
        body = await self._json("GET", "/v1/stats", None, write=False)
        scope = self._scope
        if scope is None:
            return int(body["cache"]["keys"])
        groups = body.get("groups")
        group = groups.get(scope.group) if isinstance(groups, dict) else None
        if isinstance(group, dict) and isinstance(group.get("cache"), dict):
            return int(group["cache"]["keys"])  # a store's figures of each group it hosts
        return await self._count(consistency)

    async def _count(self, consistency: str) -> int:
        """The group's live keys, counted page by page (a store that reports no per-group
        figures, or does not host the group: its ``cache`` counts other groups' keys)."""
        count, after = 0, None
        while True:
            keys, after = await self.list_keys("", after, LIST_LIMIT_MAX, consistency)
            count += len(keys)
            if after is None:
                return count

    # --- writes ---------------------------------------------------------------------------

    async def set(
        self,
        key: str,
        value: bytes,
        *,
        ttl: float | None = None,
        if_version: int | None = None,
        if_absent: bool = False,
    ) -> int:
        headers = {}
        if if_version is not None:
            headers["If-Match"] = f'"{if_version}"'
        if if_absent:
            headers["If-None-Match"] = "*"
        path = f"/v1/keys/{_q(key)}" + ("" if ttl is None else f"?ttl={ttl!r}")
        status, answer, body = await self._request("PUT", path, value, write=True, headers=headers)
        _raise_for(status, body, write=True, headers=answer)
        return int(orjson.loads(body)["version"])

    async def delete(self, key: str, *, if_version: int | None = None) -> bool:
        headers = {} if if_version is None else {"If-Match": f'"{if_version}"'}
        status, answer, body = await self._request(
            "DELETE", f"/v1/keys/{_q(key)}", None, write=True, headers=headers
        )
        _raise_for(status, body, write=True, headers=answer)
        return bool(orjson.loads(body)["deleted"])

    async def incr(self, key: str, by: int) -> int:
        body = await self._json("POST", f"/v1/keys/{_q(key)}/incr", {"by": by}, write=True)
        return int(body["value"])

    async def batch(self, ops: Sequence[BatchOp]) -> list[BatchItem]:
        wire = [_op_to_json(op) for op in ops]
        body = await self._json("POST", "/v1/batch", {"ops": wire}, write=True)
        results: list[BatchItem] = []
        for op, result in zip(ops, body["results"], strict=True):
            if isinstance(op, GetOp):
                value = result["value"]
                results.append(None if value is None else base64.b64decode(value))
            elif isinstance(op, SetOp):
                results.append(int(result["version"]))
            elif isinstance(op, IncrOp):
                results.append(int(result["value"]))
            elif isinstance(op, TtlOp):
                results.append(bool(result["changed"]))
            elif isinstance(op, HashOp):
                results.append(_hash_result(op, result))
            else:
                results.append(bool(result["deleted"]))
        return results

    async def flush(self, prefix: str) -> int:
        query = f"?prefix={_q(prefix)}"
        if self._scope is not None:
            query += f"&group={_q(self._scope.group)}"
        body = await self._json("DELETE", "/v1/keys" + query, None, write=True)
        return int(body["deleted"])

    # --- scripts (``POST /v1/scripts``: raftcache.server.routes_scripts) ----------------------

    async def eval(
        self,
        script: bytes,
        keys: Sequence[str],
        args: Sequence[bytes],
        *,
        slot: int | None = None,
        read_only: bool = False,
    ) -> ScriptReply:
        return await self._run_script(
            {"op": "eval", "script": base64.b64encode(script).decode()}, keys, args, slot, read_only
        )

    async def evalsha(
        self,
        sha: str,
        keys: Sequence[str],
        args: Sequence[bytes],
        *,
        slot: int | None = None,
        read_only: bool = False,
    ) -> ScriptReply:
        return await self._run_script({"op": "evalsha", "sha": sha}, keys, args, slot, read_only)

    async def _run_script(
        self,
        request: dict[str, Any],
        keys: Sequence[str],
        args: Sequence[bytes],
        slot: int | None,
        read_only: bool,
    ) -> ScriptReply:
        request["keys"] = list(keys)
        request["args"] = [base64.b64encode(arg).decode() for arg in args]
        if slot is not None:
            request["slot"] = slot
        if read_only:  # sent only then: the field is newer than the route
            request["read_only"] = True
        body = await self._json("POST", self._scripts_path(), request, write=True)
        try:
            return reply_from_json(body["reply"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IndeterminateWriteError("the leader answered a script with no reply") from exc

    async def script_load(self, script: bytes) -> str:
        request = {"op": "load", "script": base64.b64encode(script).decode()}
        body = await self._json("POST", self._scripts_path(), request, write=True)
        return str(body["sha"])

    async def script_exists(self, shas: Sequence[str], consistency: str) -> list[bool]:
        request = {"op": "exists", "shas": list(shas), "consistency": consistency}
        body = await self._json("POST", self._scripts_path(), request, write=False)
        return [bool(found) for found in body["exists"]]

    async def script_flush(self) -> int:
        body = await self._json("POST", self._scripts_path(), {"op": "flush"}, write=True)
        return int(body["flushed"])

    def _scripts_path(self) -> str:
        if self._scope is None:
            return "/v1/scripts"
        return f"/v1/scripts?group={_q(self._scope.group)}"

    async def publish(self, channel: bytes, message: bytes) -> int:
        query = "" if self._scope is None else f"?group={_q(self._scope.group)}"
        payload = {
            "channel": base64.b64encode(channel).decode(),
            "message": base64.b64encode(message).decode(),
        }
        body = await self._json("POST", "/v1/publish" + query, payload, write=True)
        return int(body["index"])

    # --- HTTP -----------------------------------------------------------------------------

    async def _json(self, method: str, path: str, payload: Any, *, write: bool) -> Any:
        data = None if payload is None else orjson.dumps(payload)
        status, headers, body = await self._request(method, path, data, write=write)
        _raise_for(status, body, write=write, headers=headers)
        return orjson.loads(body)

    async def _request(
        self,
        method: str,
        path: str,
        data: bytes | None,
        *,
        write: bool,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, bytes]:
        all_headers = {**self._headers, **(headers or {})}
        try:
            async with self._session.request(
                method,
                self._base + path,
                data=data,
                headers=all_headers,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                return resp.status, resp.headers, await resp.read()
        except (aiohttp.ClientConnectorError, aiohttp.InvalidURL) as exc:
            raise LeaderMovedError(None, f"leader unreachable: {type(exc).__name__}") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            if write:
                raise IndeterminateWriteError(
                    "the leader did not answer a forwarded write"
                ) from exc
            raise UnavailableError("the leader did not answer") from exc


def _q(text: str) -> str:
    return quote(text, safe="")


def _read_query(consistency: str, touch: bool) -> str:
    """The query of a read: its consistency, and ``touch=false`` when it must leave recency
    alone (sent only then, so a leader of an earlier release still answers the others)."""
    return f"?consistency={consistency}" + ("" if touch else "&touch=false")


def _hash_result(op: HashOp, result: Mapping[str, Any]) -> BatchItem:
    """A hash op's result from its HTTP form (``raftcache.server.results``)."""
    if op.action == "read":
        fields = result["fields"]
        return None if fields is None else tuple(base64.b64decode(x) for x in fields)
    if op.action == "incrf":
        return base64.b64decode(result["value"])
    return int(result["value"] if op.action == "incr" else result["count"])


def _hash_op_to_json(op: HashOp) -> dict[str, Any]:
    wire: dict[str, Any] = {"op": "hash", "key": op.key, "action": op.action}
    if op.fields:
        wire["fields"] = [base64.b64encode(f).decode() for f in op.fields]
    if op.values:
        wire["values"] = [base64.b64encode(v).decode() for v in op.values]
    if op.action in ("incr", "incrf"):
        wire["by"] = op.by
    if op.nx:
        wire["nx"] = True
    return wire


def _op_to_json(op: BatchOp) -> dict[str, Any]:
    if isinstance(op, GetOp):
        return {"op": "get", "key": op.key}
    if isinstance(op, HashOp):
        return _hash_op_to_json(op)
    if isinstance(op, IncrOp):
        return {"op": "incr", "key": op.key, "by": op.by}
    wire: dict[str, Any]
    if isinstance(op, TtlOp):
        wire = {"op": "ttl", "key": op.key}
        if op.at is not None:
            wire["at"] = op.at
        else:
            wire["ttl"] = op.ttl
        if op.condition is not None:
            wire["condition"] = op.condition
    elif isinstance(op, DeleteOp):
        wire = {"op": "delete", "key": op.key}
    else:
        wire = {"op": "set", "key": op.key, "value": base64.b64encode(op.value).decode()}
        if op.ttl is not None:
            wire["ttl"] = op.ttl
        if op.if_absent:
            wire["if_absent"] = True
        if op.keep_ttl:
            wire["keep_ttl"] = True
    # Sent only when needed: the HTTP API refuses fields it does not know (see _raise_for).
    if op.if_version is not None:
        wire["if_version"] = op.if_version
    return wire


def _expiry_of(headers: Mapping[str, str]) -> float | None:
    """The expiry ``GET /v1/keys/{key}`` reported (``X-Raftcache-Expires-At``), None for none;
    an error when the answer did not say (a store whose HTTP API does not report expiries)."""
    raw = headers.get(EXPIRES_HEADER)
    if raw is None:
        raise RespError(
            "ERR this store holds no replica of the key's group and the group's leader does "
            f"not report expiries ({EXPIRES_HEADER}): run this command on a store that hosts "
            "the group"
        )
    raw = raw.strip()
    if raw.lower() in ("", "never", "none"):
        return None
    try:
        return float(raw)
    except ValueError:
        raise UnavailableError(f"the leader sent an unreadable {EXPIRES_HEADER}") from None


def _raise_for(
    status: int, body: bytes, *, write: bool, headers: Mapping[str, str] | None = None
) -> None:
    """Raise the exception ``CacheService`` would have raised for this HTTP answer (``write``:
    the request may have changed state, so an unexpected status leaves its outcome unknown;
    ``headers``: the answer's, which say when a 503 means "not the leader")."""
    if status < 300:
        return
    try:
        error = orjson.loads(body)
    except orjson.JSONDecodeError:
        error = {}
    message = str(error.get("error", f"HTTP {status}")) if isinstance(error, dict) else ""
    if status == 412:
        raise PreconditionFailedError(int(error.get("version", 0)))
    if status == 409 and isinstance(error, dict) and "command_format_needed" in error:
        raise CommandVersionNotEnabledError(
            int(error["command_format_needed"]), None, reason=message
        )
    code = error.get("code") if isinstance(error, dict) else None
    if status == 409 and code == "wrong_type":
        raise WrongTypeError(message)
    if status == 409 and code == "hash_value":
        raise HashValueError(message)
    if status == 409:
        raise (CounterOverflowError if "overflow" in message else NotACounterError)(message)
    if status == 413:
        raise ValueTooLargeError(message)
    if status == 400 and "unknown field" in message and "if_" in message:
        raise RespError(
            "ERR this transaction needs conditional batch ops, which the leader (an older "
            "raftcache) does not accept over HTTP: run it on the leader's RESP port"
        )
    if status == 400:
        raise InvalidCommandError(message)
    if status == 401:
        raise RespError("ERR the leader refused the forwarded request: wrong client token")
    if status == 503 and headers is not None and NOT_LEADER_HEADER in headers:
        raise LeaderMovedError(headers[NOT_LEADER_HEADER] or None, message)
    if status == 503:
        raise UnavailableError(message)
    if status == 504:
        raise IndeterminateWriteError(message)
    if write:
        raise IndeterminateWriteError(f"the leader answered HTTP {status}: {message}")
    raise UnavailableError(f"the leader answered HTTP {status}: {message}")
