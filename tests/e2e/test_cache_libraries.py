"""The cache libraries applications put in front of Redis, configured as an application would,
against the RESP port of three real ``raftcache serve`` processes: Django's ``RedisCache``,
Flask-Caching's ``RedisCache`` and aiocache's ``Cache.REDIS``.

Each library's whole API is used through a follower (every write is forwarded to the leader):
values round-trip, pickled Python objects included, timeouts are TTLs redis-py sees, and the
decorators (``get_or_set``, ``cached``, ``memoize``) compute once. Then the leader is SIGKILLed
while every library points at a follower: each keeps being used, retrying an operation that
fails during the election as an application's retry would, and every key acknowledged before
the kill reads back unchanged, with its TTL, and new writes work.

One cluster serves the module; the leader-kill test comes last (it leaves two nodes), and each
test clears the cache when it ends, so the others see only their own keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import redis
from aiocache import Cache as AioCache
from aiocache import cached as aio_cached
from aiocache.lock import OptimisticLock, OptimisticLockError, RedLock
from aiocache.serializers import PickleSerializer
from django.conf import settings
from django.core.cache import cache as django_default_cache
from django.test.utils import override_settings
from flask import Flask
from flask_caching import Cache as FlaskCache

from tests.e2e.nodes import ProcessCluster, wait_for_leader

pytestmark = pytest.mark.e2e

T = TypeVar("T")
FAST = ["--election-timeout-min", "0.3", "--election-timeout-max", "0.6"]
#: How long an application keeps retrying an operation across the leader's death.
RETRY_S = 20.0
#: aiocache 0.12.3 calls redis-py methods that redis-py 8 deprecates (``close()`` for
#: ``aclose()``, ``setex``/``psetex`` for ``set``): warnings of the library's own, about redis-py,
#: unrelated to the server. Only those are let through.
AIOCACHE_DEPRECATIONS = pytest.mark.filterwarnings(
    r"ignore:Call to deprecated (close|setex|psetex)\.:DeprecationWarning"
)

#: A value no library can store as a plain string: each pickles it.
OBJECT = {
    "when": datetime.datetime(2026, 12, 7, 19, 30, tzinfo=datetime.UTC),
    "amount": Decimal("12.50"),
    "tags": frozenset({"a", "b"}),
    "nested": [1, (2, 3), b"\x00\xff"],
}


@dataclass
class Nodes:
    cluster: ProcessCluster
    resp: dict[str, int]

    def url(self, node_id: str) -> str:
        return f"redis://127.0.0.1:{self.resp[node_id]}"

    def redis(self, node_id: str) -> redis.Redis:
        return redis.Redis(port=self.resp[node_id], socket_timeout=10)

    async def leader(self) -> str:
        async with aiohttp.ClientSession() as http:
            return (await wait_for_leader(self.cluster, http)).node_id

    async def follower(self) -> str:
        leader = await self.leader()
        return next(n.node_id for n in self.cluster.live() if n.node_id != leader)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    with ProcessCluster(Path(tmp_path_factory.mktemp("cache-libs")), 3, FAST) as cluster:
        resp = cluster.give_resp_ports()
        cluster.start_all()
        running = Nodes(cluster, resp)
        asyncio.run(running.leader())
        yield running


@contextlib.contextmanager
def django_cache(url: str) -> Iterator[Any]:
    """``django.core.cache.cache`` with the settings an application's settings.py would have
    (``CACHES = {...}``); ``override_settings`` so that each test can name its own node."""
    if not settings.configured:
        settings.configure()
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}
    }
    with override_settings(CACHES=caches):
        try:
            yield django_default_cache
        finally:
            django_default_cache.close()


def flask_cache(url: str) -> tuple[Flask, FlaskCache]:
    app = Flask(__name__)
    cache = FlaskCache(app, config={"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": url})
    return app, cache


def aio_cache(port: int) -> Any:
    return AioCache(
        AioCache.REDIS,
        endpoint="127.0.0.1",
        port=port,
        namespace="aio",
        serializer=PickleSerializer(),
    )


def retry(call: Callable[[], T], deadline: float) -> T:
    """``call()`` once it stops failing with the errors an election causes (the connection
    refused or timed out, TRYAGAIN, INDETERMINATE), as an application's retry loop would."""
    while True:
        try:
            return call()
        except (redis.RedisError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def aretry(call: Callable[[], Awaitable[T]], deadline: float) -> T:
    while True:
        try:
            return await call()
        except (redis.RedisError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def raw(r: redis.Redis, key: str) -> bytes:
    value = r.get(key)
    assert isinstance(value, bytes), (key, value)
    return value


def assert_ttl(r: redis.Redis, key: str, low: int, high: int) -> None:
    ttl = r.ttl(key)
    assert isinstance(ttl, int)
    assert low <= ttl <= high, (key, ttl)


async def test_django_redis_cache(nodes: Nodes) -> None:
    follower = await nodes.follower()
    r = nodes.redis(follower)
    with django_cache(nodes.url(follower)) as cache:
        cache.set("greeting", "hello")
        assert cache.get("greeting") == "hello"
        assert cache.get("missing", "default") == "default"
        cache.set("object", OBJECT, timeout=120)
        assert cache.get("object") == OBJECT
        key = cache.make_key("object")  # ":1:object": Django's version prefix
        assert raw(r, key)[:1] == b"\x80"  # a pickle, as Redis would hold it
        assert_ttl(r, key, 100, 120)
        cache.set("forever", "v", timeout=None)
        assert r.ttl(cache.make_key("forever")) == -1
        assert cache.touch("forever", 60)  # EXPIRE
        assert_ttl(r, cache.make_key("forever"), 50, 60)
        assert cache.touch("forever", None)  # PERSIST
        assert r.ttl(cache.make_key("forever")) == -1
        assert not cache.touch("missing", 60)

        # add is SET NX EX; get_or_set is add then get: the callable runs once.
        assert not cache.add("greeting", "other")
        assert cache.get("greeting") == "hello"
        assert cache.add("added", [1, 2], timeout=30)
        assert_ttl(r, cache.make_key("added"), 20, 30)
        calls: list[int] = []

        def compute() -> dict[str, int]:
            calls.append(1)
            return {"computed": 42}

        assert cache.get_or_set("lazy", compute, timeout=60) == {"computed": 42}
        assert cache.get_or_set("lazy", compute, timeout=60) == {"computed": 42}
        assert len(calls) == 1

        # set_many is a MULTI of MSET and one EXPIRE per key; get_many is MGET.
        assert cache.set_many({"m1": 1, "m2": "two", "m3": OBJECT}, timeout=90) == []
        assert cache.get_many(["m1", "m2", "m3", "absent"]) == {"m1": 1, "m2": "two", "m3": OBJECT}
        for name in ("m1", "m2", "m3"):
            assert_ttl(r, cache.make_key(name), 80, 90)

        # Integers are stored as text, so incr/decr are INCRBY on the stored value.
        cache.set("counter", 10)
        assert cache.incr("counter") == 11
        assert cache.incr("counter", 5) == 16
        assert cache.decr("counter", 20) == -4
        assert cache.get("counter") == -4
        assert r.get(cache.make_key("counter")) == b"-4"
        with pytest.raises(ValueError, match="not found"):
            cache.incr("no-counter")

        # Versions: incr_version moves a value to ":2:<key>".
        assert cache.incr_version("greeting") == 2
        assert cache.get("greeting") is None
        assert cache.get("greeting", version=2) == "hello"

        assert cache.has_key("m1")
        assert cache.delete("m1")
        assert not cache.delete("m1")
        assert not cache.has_key("m1")
        cache.delete_many(["m2", "m3"])
        assert cache.get_many(["m2", "m3"]) == {}
        cache.set("gone", "v", timeout=0)  # a non-positive timeout deletes
        assert cache.get("gone") is None

        assert cache.clear()  # FLUSHDB
        assert r.dbsize() == 0
    r.close()


async def test_flask_caching_redis_cache(nodes: Nodes) -> None:
    follower = await nodes.follower()
    r = nodes.redis(follower)
    app, cache = flask_cache(nodes.url(follower))
    prefix = "flask_cache_"  # CACHE_KEY_PREFIX's default
    with app.app_context():
        assert cache.set("greeting", "hello")
        assert cache.get("greeting") == "hello"
        assert cache.get("missing") is None
        assert cache.set("object", OBJECT, timeout=120)
        assert cache.get("object") == OBJECT
        assert raw(r, prefix + "object")[:1] == b"!"  # "!" + pickle: cachelib's format
        assert_ttl(r, prefix + "object", 100, 120)
        assert_ttl(r, prefix + "greeting", 290, 300)  # CACHE_DEFAULT_TIMEOUT
        assert cache.set("forever", "v", timeout=0)
        assert r.ttl(prefix + "forever") == -1

        # add is SETNX then EXPIRE.
        assert not cache.add("greeting", "other")
        assert cache.get("greeting") == "hello"
        assert cache.add("added", [1, 2], timeout=30)
        assert_ttl(r, prefix + "added", 20, 30)

        # set_many is a pipeline of SETs (no MULTI); get_many is MGET.
        assert cache.set_many({"m1": 1, "m2": "two", "m3": OBJECT}, timeout=90) == [
            "m1",
            "m2",
            "m3",
        ]
        assert cache.get_many("m1", "m2", "m3", "absent") == [1, "two", OBJECT, None]
        assert cache.get_dict("m1", "m2") == {"m1": 1, "m2": "two"}
        assert_ttl(r, prefix + "m3", 80, 90)

        # inc/dec are the backend's (``cache.cache``): INCRBY on the integer stored as text.
        assert cache.set("counter", 10)
        assert cache.cache.inc("counter") == 11
        assert cache.cache.dec("counter", 15) == -4
        assert cache.get("counter") == -4
        assert cache.cache.inc("fresh-counter", 3) == 3  # INCRBY creates the key

        assert cache.has("m1")
        assert cache.delete("m1")
        assert not cache.delete("m1")
        assert cache.delete_many("m2", "m3") == ["m2", "m3"]
        assert cache.get_many("m2", "m3") == [None, None]
        # Annotated list[str], unlink answers what redis-py's UNLINK does: the count.
        unlinked: Any = cache.unlink("fresh-counter", "absent")
        assert unlinked == 1

        # The decorators: a view cached by its path, a function memoized by its arguments.
        renders: list[str] = []
        squares: list[int] = []

        @app.route("/report/<name>")
        @cache.cached(timeout=60)
        def report(name: str) -> str:
            renders.append(name)
            return f"report for {name}: {len(renders)}"

        @cache.memoize(timeout=60)
        def square(n: int) -> dict[str, int]:
            squares.append(n)
            return {"square": n * n}

        client = app.test_client()
        first = client.get("/report/alice")
        assert first.status_code == 200
        assert client.get("/report/alice").data == first.data == b"report for alice: 1"
        assert client.get("/report/bob").data == b"report for bob: 2"
        assert renders == ["alice", "bob"]
        assert_ttl(r, prefix + "view//report/alice", 50, 60)
        assert square(4) == square(4) == {"square": 16}
        assert square(5) == {"square": 25}
        assert squares == [4, 5]
        cache.delete_memoized(square, 4)
        assert square(4) == {"square": 16}
        assert squares == [4, 5, 4]

        # With a key prefix, clear is KEYS prefix* then DEL: other keys stay.
        r.set("not-flask", "stays")
        assert cache.clear()
        assert r.keys("*") == [b"not-flask"]
        r.flushdb()
    r.close()


async def test_flask_caching_finds_the_leader_through_sentinel(nodes: Nodes) -> None:
    """``RedisSentinelCache``: every node is a Sentinel for the service ``raftcache``, so the
    writes go to the leader itself (no forwarding) and the reads to a follower."""
    leader = await nodes.leader()
    app = Flask(__name__)
    config = {
        "CACHE_TYPE": "RedisSentinelCache",
        "CACHE_REDIS_SENTINELS": [("127.0.0.1", port) for port in nodes.resp.values()],
        "CACHE_REDIS_SENTINEL_MASTER": "raftcache",
    }
    cache = FlaskCache(app, config=config)
    with app.app_context():
        assert cache.set("object", OBJECT, timeout=60)
        assert cache.get("object") == OBJECT
        assert cache.cache.inc("counter", 2) == 2
        # The backend's own clients (cachelib's names; ``cache.cache`` is typed SimpleCache):
        # a master, then a replica.
        backend: Any = cache.cache
        write_client, read_client = backend._write_client, backend._read_client
        assert write_client.connection_pool.get_master_address() == (
            "127.0.0.1",
            nodes.resp[leader],
        )
        assert write_client.execute_command("ROLE")[0] == b"master"
        assert read_client.execute_command("ROLE")[0] == b"slave"
        assert cache.clear()
        assert cache.get("object") is None
        write_client.close()
        read_client.close()


@AIOCACHE_DEPRECATIONS
async def test_aiocache_redis_cache(nodes: Nodes) -> None:
    follower = await nodes.follower()
    r = nodes.redis(follower)
    cache = aio_cache(nodes.resp[follower])
    try:
        assert await cache.set("greeting", "hello")
        assert await cache.get("greeting") == "hello"
        assert await cache.get("missing", default="default") == "default"
        assert await cache.set("object", OBJECT, ttl=120)
        assert await cache.get("object") == OBJECT
        assert_ttl(r, "aio:object", 100, 120)  # the namespace is a key prefix
        assert await cache.set("millis", "v", ttl=1.5)  # a float ttl is PSETEX
        pttl = r.pttl("aio:millis")
        assert isinstance(pttl, int)
        assert 0 < pttl <= 1500
        assert await cache.expire("greeting", 60)
        assert_ttl(r, "aio:greeting", 50, 60)
        assert await cache.expire("greeting", 0)  # PERSIST
        assert r.ttl("aio:greeting") == -1

        with pytest.raises(ValueError, match="already exists"):
            await cache.add("greeting", "other")  # SET NX
        assert await cache.add("added", [1, 2], ttl=30)
        assert_ttl(r, "aio:added", 20, 30)

        # multi_set with a ttl is a MULTI of MSET and one EXPIRE per key.
        assert await cache.multi_set([("m1", 1), ("m2", "two"), ("m3", OBJECT)], ttl=90)
        assert await cache.multi_get(["m1", "m2", "m3", "absent"]) == [1, "two", OBJECT, None]
        assert_ttl(r, "aio:m3", 80, 90)

        # increment is INCRBY: the counter must be stored as text, not pickled.
        assert await cache.increment("counter", 10) == 10
        assert await cache.increment("counter", -14) == -4
        assert await cache.set("pickled-int", 1)
        with pytest.raises(TypeError, match="not an integer"):
            await cache.increment("pickled-int")

        # Compare-and-set: a Lua script (EVAL) that sets only if the value is unchanged. With
        # the default serializer (JSON): aiocache's ``gets`` decodes the raw value as UTF-8,
        # which a pickle is not, whatever the server.
        json_cache = AioCache(AioCache.REDIS, endpoint="127.0.0.1", port=nodes.resp[follower])
        try:
            assert await json_cache.set("doc", {"rev": 1})
            async with OptimisticLock(json_cache, "doc") as lock:
                assert await lock.cas({"rev": 2})
            assert await json_cache.get("doc") == {"rev": 2}
            async with OptimisticLock(json_cache, "doc") as lock:
                await json_cache.set("doc", {"rev": "changed meanwhile"})
                with pytest.raises(OptimisticLockError):
                    await lock.cas({"rev": 3})
            assert await json_cache.get("doc") == {"rev": "changed meanwhile"}
            assert r.get("doc") == b'{"rev": "changed meanwhile"}'
            assert await json_cache.delete("doc") == 1
        finally:
            await json_cache.close()

        # RedLock: SET NX PX holds the lease, a Lua script checking the owner releases it.
        async with RedLock(cache, "resource", lease=5.0):
            lease = r.pttl("aio:resource-lock")
            assert isinstance(lease, int)
            assert 0 < lease <= 5000
        assert not r.exists("aio:resource-lock")

        calls: list[int] = []

        async def compute(n: int) -> dict[str, int]:
            calls.append(n)
            return {"n": n}

        # The decorator makes its own cache from the same arguments (aiocache is untyped).
        report: Any = aio_cached(
            ttl=60,
            key="aio:report",
            cache=AioCache.REDIS,
            endpoint="127.0.0.1",
            port=nodes.resp[follower],
            serializer=PickleSerializer(),
        )(compute)
        try:
            assert await report(1) == {"n": 1}
            assert await report(2) == {"n": 1}  # the key is fixed: computed once
            assert calls == [1]
            assert_ttl(r, "aio:report", 50, 60)
        finally:
            await report.cache.close()

        assert await cache.exists("m1")
        assert await cache.delete("m1") == 1
        assert await cache.delete("m1") == 0
        assert not await cache.exists("m1")

        # clear(namespace) is KEYS namespace:* then DEL; clear() is FLUSHDB.
        r.set("other:key", "stays")
        assert await cache.clear(namespace="aio")
        assert r.keys("*") == [b"other:key"]
        assert await cache.clear()
        assert r.dbsize() == 0
    finally:
        await cache.close()
        r.close()


@AIOCACHE_DEPRECATIONS
async def test_every_library_keeps_its_writes_across_a_leader_kill(nodes: Nodes) -> None:
    leader = await nodes.leader()
    follower = await nodes.follower()  # survives the kill; forwards to whichever node leads
    r = nodes.redis(follower)
    app, flask = flask_cache(nodes.url(follower))
    aio = aio_cache(nodes.resp[follower])
    batch = {f"k{i}": {"i": i, "object": OBJECT} for i in range(20)}
    try:
        with django_cache(nodes.url(follower)) as django, app.app_context():
            # Acknowledged writes, with a TTL so that it is checked too.
            django.set_many({f"django-{k}": v for k, v in batch.items()}, timeout=600)
            django.set("django-counter", 5)
            flask.set_many({f"flask-{k}": v for k, v in batch.items()}, timeout=600)
            flask.set("flask-counter", 5)
            await aio.multi_set(list(batch.items()), ttl=600)
            await aio.increment("counter", 5)

            assert nodes.cluster.kill(leader) == -9
            deadline = time.monotonic() + RETRY_S

            def django_reads() -> dict[str, Any]:
                got: dict[str, Any] = django.get_many([f"django-{k}" for k in batch])
                return got

            got = retry(django_reads, deadline)
            assert got == {f"django-{k}": v for k, v in batch.items()}
            assert retry(lambda: flask.get_many(*(f"flask-{k}" for k in batch)), deadline) == list(
                batch.values()
            )
            aio_got = await aretry(lambda: aio.multi_get(list(batch)), deadline)
            assert aio_got == list(batch.values())
            for k in batch:
                for key in (django.make_key(f"django-{k}"), f"flask_cache_flask-{k}", f"aio:{k}"):
                    assert_ttl(r, key, 500, 600)

            # The counters continue from their acknowledged values (not retried: INCR is not
            # idempotent, and the reads above prove a leader is serving).
            assert django.incr("django-counter") == 6
            assert flask.cache.inc("flask-counter") == 6
            assert await aio.increment("counter") == 6

            # New writes work, through the same follower, and read back.
            retry(lambda: django.set("django-after", OBJECT, timeout=60), deadline)
            retry(lambda: flask.set("flask-after", OBJECT, timeout=60), deadline)
            await aretry(lambda: aio.set("after", OBJECT, ttl=60), deadline)
            assert django.get("django-after") == OBJECT
            assert flask.get("flask-after") == OBJECT
            assert await aio.get("after") == OBJECT
            assert await nodes.leader() != leader
            assert django.clear()
    finally:
        await aio.close()
        r.close()
