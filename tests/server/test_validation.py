"""Unit tests of the server's input validation (pure functions)."""

from __future__ import annotations

import base64
from urllib.parse import quote

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftcache.server.errors import ApiError
from raftcache.server.validation import (
    BatchOp,
    Limits,
    key_from_raw_path,
    parse_batch_body,
    parse_consistency,
    parse_if_match,
    parse_if_none_match,
    parse_incr_body,
    parse_limit,
    parse_mget_body,
    parse_session_headers,
    parse_touch,
    parse_ttl_body,
    validate_ttl,
)

LIMITS = Limits(max_value_bytes=16, max_batch_ops=3, max_batch_bytes=40)


def status_of(fn: object, *args: object) -> int:
    with pytest.raises(ApiError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.status


@given(st.text(min_size=1, max_size=200))
def test_any_utf8_key_round_trips_through_the_path(key: str) -> None:
    encoded = quote(key.encode("utf-8", "surrogatepass"), safe="")
    raw = key.encode("utf-8", "surrogatepass")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        assert status_of(key_from_raw_path, f"/v1/keys/{encoded}") == 400
        return
    if len(raw) > 1024:
        assert status_of(key_from_raw_path, f"/v1/keys/{encoded}") == 400
    else:
        assert key_from_raw_path(f"/v1/keys/{encoded}?x=1") == key


def test_key_with_encoded_slash_and_incr_suffix() -> None:
    assert key_from_raw_path("/v1/keys/a%2Fb/incr") == "a/b"


@pytest.mark.parametrize(
    "path", ["/v1/keys/%FF", "/v1/keys/", "/v1/keys/" + "a" * 1025, "/v1/keys/%C3"]
)
def test_bad_keys_are_400(path: str) -> None:
    assert status_of(key_from_raw_path, path) == 400


def test_key_of_exactly_1_kib_is_accepted() -> None:
    assert key_from_raw_path("/v1/keys/" + "é" * 512) == "é" * 512


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "-inf", "1e999", "abc", ""])
def test_bad_ttls(text: str) -> None:
    assert status_of(validate_ttl, text) == 400


@pytest.mark.parametrize("value", [True, [1], {"a": 1}, 0, -2.5, float("nan")])
def test_bad_json_ttls(value: object) -> None:
    assert status_of(validate_ttl, value) == 400


def test_good_ttls() -> None:
    assert validate_ttl("1.5") == 1.5
    assert validate_ttl(2) == 2.0
    assert validate_ttl(None) is None


def test_if_match() -> None:
    assert parse_if_match('"0"') == 0
    assert parse_if_match(' "42" ') == 42
    assert parse_if_match(None) is None
    for bad in ["42", '"-1"', '"a"', "*", 'W/"1"', '"1", "2"', '"99999999999999999999"', '""']:
        assert status_of(parse_if_match, bad) == 400, bad


def test_if_none_match() -> None:
    assert parse_if_none_match("*") is True
    assert parse_if_none_match(None) is False
    assert status_of(parse_if_none_match, '"3"') == 400


def test_consistency() -> None:
    assert parse_consistency(None) == "linearizable"
    for level in ("linearizable", "lease", "stale"):
        assert parse_consistency(level) == level
    assert status_of(parse_consistency, "strong") == 400
    assert status_of(parse_consistency, "") == 400


def test_touch() -> None:
    assert parse_touch(None) is True
    assert parse_touch("true") is True
    assert parse_touch("false") is False
    for bad in ["", "False", "0", "no", "x" * 500]:
        assert status_of(parse_touch, bad) == 400, bad


def test_limit_bounds() -> None:
    assert parse_limit(None, LIMITS) == LIMITS.default_list_limit
    assert parse_limit("1", LIMITS) == 1
    assert parse_limit("1000", LIMITS) == 1000
    for bad in ["0", "1001", "-1", "x", "1.5", "9" * 30]:
        assert status_of(parse_limit, bad, LIMITS) == 400, bad


def test_incr_body() -> None:
    assert parse_incr_body(b"") == 1
    assert parse_incr_body(b"{}") == 1
    assert parse_incr_body(b'{"by": -7}') == -7
    for bad in [
        b'{"by": true}',
        b'{"by": 1.5}',
        b'{"by": "1"}',
        b"[1]",
        b"{",
        b'{"bye": 1}',
        b'{"by": 9223372036854775808}',
        b"\xff\xfe",
    ]:
        assert status_of(parse_incr_body, bad) == 400, bad


def test_session_headers() -> None:
    assert parse_session_headers(None, None) is None
    assert parse_session_headers("c1.2", "7") == ("c1.2", 7)
    for cid, seq in [
        ("c", None),
        (None, "1"),
        ("c", "-1"),
        ("c", "x"),
        ("", "1"),
        ("a b", "1"),
        ("x" * 129, "1"),
    ]:
        assert status_of(parse_session_headers, cid, seq) == 400


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_batch_body_valid() -> None:
    body = orjson.dumps(
        {
            "ops": [
                {"op": "set", "key": "a", "value": b64(b"xy"), "ttl": 3},
                {"op": "get", "key": "a"},
                {"op": "delete", "key": "b"},
            ]
        }
    )
    assert parse_batch_body(body, LIMITS) == [
        BatchOp("set", "a", b"xy", 3.0),
        BatchOp("get", "a"),
        BatchOp("delete", "b"),
    ]


@pytest.mark.parametrize(
    "obj",
    [
        [],
        {"ops": {}},
        {"ops": [1]},
        {"ops": [{"op": "put", "key": "a"}]},
        {"ops": [{"key": "a"}]},
        {"ops": [{"op": "get", "key": ""}]},
        {"ops": [{"op": "get", "key": 5}]},
        {"ops": [{"op": "get", "key": "a", "value": "eA=="}]},
        {"ops": [{"op": "set", "key": "a"}]},
        {"ops": [{"op": "set", "key": "a", "value": "not base64!"}]},
        {"ops": [{"op": "set", "key": "a", "value": "eA"}]},
        {"ops": [{"op": "set", "key": "a", "value": 12}]},
        {"ops": [{"op": "set", "key": "a", "value": "eA==", "ttl": -1}]},
        {"ops": [{"op": "set", "key": "a", "value": "eA==", "ttl": "5"}]},
        {"ops": [{"op": "get", "key": "a"}] * 4},
        {"ops": [], "extra": 1},
    ],
)
def test_batch_body_invalid_is_400(obj: object) -> None:
    assert status_of(parse_batch_body, orjson.dumps(obj), LIMITS) == 400


def test_batch_json_ttl_string_is_rejected_but_number_accepted() -> None:
    ok = {"ops": [{"op": "set", "key": "a", "value": "eA==", "ttl": 0.5}]}
    assert parse_batch_body(orjson.dumps(ok), LIMITS)[0].ttl == 0.5


def test_batch_sizes_are_413() -> None:
    big = {"ops": [{"op": "set", "key": "a", "value": b64(b"x" * 17)}]}
    assert status_of(parse_batch_body, orjson.dumps(big), LIMITS) == 413
    total = {"ops": [{"op": "set", "key": k, "value": b64(b"x" * 16)} for k in "abc"]}
    assert status_of(parse_batch_body, orjson.dumps(total), LIMITS) == 413


def test_batch_garbage_bodies() -> None:
    for body in [b"", b"null", b"nonsense", b"\x00\x01", b'{"ops": [', b'"ops"']:
        assert status_of(parse_batch_body, body, LIMITS) == 400, body


def test_mget_body() -> None:
    assert parse_mget_body(b'{"keys": ["a", "b/c"]}', LIMITS) == ["a", "b/c"]
    for body in [
        b"{}",
        b'{"keys": "a"}',
        b'{"keys": [1]}',
        b'{"keys": [""]}',
        b'{"keys": ["a","b","c","d"]}',
        b'{"keys": ["\\ud800"]}',
    ]:
        assert status_of(parse_mget_body, body, LIMITS) == 400, body


@pytest.mark.parametrize("field", ["ttl", "at"])
def test_ttl_change_seconds_are_bounded_as_the_schema_says(field: str) -> None:
    assert parse_ttl_body(orjson.dumps({field: 1e12}))[0 if field == "ttl" else 1] == 1e12
    assert parse_ttl_body(orjson.dumps({field: -1e12}))[0 if field == "ttl" else 1] == -1e12
    for beyond in (-1_000_000_000_001.0, 1e12 + 1):
        with pytest.raises(ApiError, match="between -1e12 and 1e12"):
            parse_ttl_body(orjson.dumps({field: beyond}))
