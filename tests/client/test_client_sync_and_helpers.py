"""The blocking Client over its loop thread, and the client's pure helpers."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import raftcache
from raftcache.client import BadRequestError, PreconditionFailedError, RetryPolicy
from raftcache.client.codec import decode_batch, encode_batch, parse_etag
from raftcache.client.endpoints import encode_key, parse_endpoints
from raftcache.client.errors import ProtocolError, Unavailable, error_from_response
from raftcache.client.session import SessionPool
from tests.client.client_fakes import Fault, threaded_cluster


def test_sync_client_roundtrip_from_several_threads() -> None:
    with threaded_cluster() as cluster, raftcache.Client(cluster.endpoints()) as client:
        assert client.set("k", b"v") > 0
        assert client.get("k") == b"v"
        assert client.status()["role"] == "leader"
        with ThreadPoolExecutor(8) as pool:
            values = list(pool.map(lambda _: client.incr("n"), range(40)))
        assert sorted(values) == list(range(1, 41))
        assert client.mget(["k", "n", "x"]) == [b"v", b"40", None]
        assert client.get("k", touch=False) == b"v"
        assert client.get_with_version("k", touch=False) == client.get_with_version("k")
        assert client.mget(["k"], touch=False) == [b"v"]
        touched = [r.raw_path for r in cluster.key_requests() if "touch" in r.raw_path]
        assert touched == ["/v1/keys/k?touch=false"] * 2 + ["/v1/mget?touch=false"]
        assert client.cas("k", b"w", 1) is None
        assert client.delete("k") is True
        assert list(client.iter_keys(page_size=1)) == ["n"]
        assert cluster.duplicates == 0
        with pytest.raises(PreconditionFailedError):
            client.set("n", b"1", if_absent=True)
        cluster.faults.append(Fault(status=503, retry_after="60"))
        with pytest.raises(Unavailable):
            client.get("n")
    assert not any(t.name.startswith("raftcache-client") for t in threading.enumerate())


def test_sync_client_close_is_idempotent_and_final() -> None:
    client = raftcache.Client("http://127.0.0.1:1")
    client.close()
    client.close()
    with pytest.raises(RuntimeError):
        client.get("k")


def test_raftcache_error_is_exported_lazily_from_the_package() -> None:
    assert raftcache.RaftcacheError is raftcache.client.RaftcacheError
    assert issubclass(raftcache.client.ConnectionFailed, raftcache.RaftcacheError)


def test_parse_endpoints() -> None:
    assert parse_endpoints("http://a:1/, b:2 ,,http://a:1") == ["http://a:1", "http://b:2"]
    assert parse_endpoints(["https://x.example/base/"]) == ["https://x.example/base"]
    for bad in ("", " , ", "ftp://a:1", "http://"):
        with pytest.raises(ValueError, match="endpoint"):
            parse_endpoints(bad)


def test_encode_key() -> None:
    assert encode_key("a/b") == "a%2Fb"
    assert encode_key("é %") == "%C3%A9%20%25"
    with pytest.raises(BadRequestError):
        encode_key("")


def test_retry_policy_grows_exponentially_within_jitter_and_cap() -> None:
    policy = RetryPolicy(initial_s=0.1, maximum_s=1.0, multiplier=2.0, jitter=0.25)
    rng = random.Random(1)
    for attempt, base in enumerate([0.1, 0.2, 0.4, 0.8, 1.0, 1.0]):
        delay = policy.backoff(attempt, rng)
        assert base * 0.75 <= delay <= base
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=2.0)


def test_session_pool_hands_out_one_lane_per_in_flight_write() -> None:
    pool = SessionPool("c", first_seq=5)
    lane_a, first = pool.acquire()
    lane_b, second = pool.acquire()
    assert (first.client_id, first.seq) == ("c", 5)
    assert (second.client_id, second.seq) == ("c.1", 1)
    pool.release(lane_a)
    _, third = pool.acquire()
    assert (third.client_id, third.seq) == ("c", 6)
    assert pool.lanes_created == 2
    pool.release(lane_b)
    with pytest.raises(ValueError, match="whitespace"):
        SessionPool("has space")


def test_batch_codec_and_etag() -> None:
    wire, kinds = encode_batch([("set", "k", b"\x00\xff", 2), ("get", "k"), ("delete", "k")])
    assert wire[0] == {"op": "set", "key": "k", "value": "AP8=", "ttl": 2.0}
    assert kinds == ["set", "get", "delete"]
    results = [{"version": 3}, {"value": "AP8="}, {"deleted": True}]
    assert decode_batch(results, kinds) == [3, b"\x00\xff", True]
    with pytest.raises(ProtocolError):
        decode_batch([{"version": True}], ["set"])
    assert parse_etag('"12"') == 12
    assert parse_etag('W/"7"') == 7
    with pytest.raises(ProtocolError):
        parse_etag('"abc"')


def test_error_from_response_keeps_message_and_retry_after() -> None:
    error = error_from_response(503, {"error": "no leader"}, retry_after=2.0, where="GET /v1/x")
    assert isinstance(error, Unavailable)
    assert error.retry_after == 2.0
    assert "no leader" in str(error)
    assert error.status == 503
