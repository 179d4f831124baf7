"""Schema-driven fuzzing with schemathesis, from the document the node serves at /openapi.json,
against a real 3-node cluster.

- Client API (keys, batch, mget, listing, status, stats, health, metrics): positive and negative
  cases; every answer must be documented (status, content type, body schema), no 5xx other than
  503, and every schema-violating request refused with a 4xx.
- Admin API: negative cases only (a valid request would really remove members or move
  leadership, which is not hostile input but an operator's command).
- Raft endpoints: negative cases that do not decode (wrong types, missing fields, garbage) or
  fail the structural checks (negative numbers...); well-formed messages with hostile values are
  tested in ``test_raft_semantics``.

schemathesis is a dev dependency, pinned in constraints.txt.
"""

from __future__ import annotations

from typing import Any

import orjson
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from raftcache.network import codec
from raftcache.raft.validation import validate_message

from .strategies import RAFT_ROUTES
from .threaded import ThreadedCluster

ALL_CHECKS = [
    not_a_server_error,
    negative_data_rejection,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZ = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def served_schema(cluster: ThreadedCluster) -> Any:
    answer = cluster.request("GET", cluster.urls()[0] + "/openapi.json")
    assert answer.status == 200
    return schemathesis.openapi.from_dict(orjson.loads(answer.body))


def strategy(schema: Any, mode: Any) -> st.SearchStrategy[Any]:
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations
    return st.one_of([op.as_strategy(generation_mode=mode) for op in operations])


def call(cluster: ThreadedCluster, case: Any, node: int) -> Any:
    # Not through a 503: a server error other than "retry later" is what we look for.
    response = case.call(base_url=cluster.urls()[node], timeout=30)
    if response.status_code == 503:
        assert response.headers["Retry-After"].isdigit()
        assert "error" in response.json()
    return response


def test_client_api_conforms_and_refuses_invalid_input(cluster: ThreadedCluster) -> None:
    # "stream": /v1/watch, whose valid requests never end (its input checks: test_watch_routes).
    schema = served_schema(cluster).exclude(tag="admin").exclude(tag="raft").exclude(tag="stream")
    modes = st.sampled_from([GenerationMode.POSITIVE, GenerationMode.NEGATIVE])

    @FUZZ
    @given(data=st.data(), node=st.integers(0, 2))
    def check(data: st.DataObject, node: int) -> None:
        case = data.draw(strategy(schema, data.draw(modes)))
        response = call(cluster, case, node)
        if response.status_code != 503:
            case.validate_response(response, checks=ALL_CHECKS)

    check()
    cluster.assert_serves()


def test_admin_api_refuses_invalid_input(cluster: ThreadedCluster) -> None:
    schema = served_schema(cluster).include(tag="admin")
    cases = strategy(schema, GenerationMode.NEGATIVE)

    @FUZZ
    @given(case=cases, node=st.integers(0, 2))
    def check(case: Any, node: int) -> None:
        response = call(cluster, case, node)
        if response.status_code != 503:
            case.validate_response(response, checks=ALL_CHECKS)

    check()
    cluster.assert_serves()


def test_raft_endpoints_refuse_malformed_messages(cluster: ThreadedCluster) -> None:
    schema = served_schema(cluster).include(tag="raft")
    cases = strategy(schema, GenerationMode.NEGATIVE)
    sent = 0

    @FUZZ
    @given(case=cases, node=st.integers(0, 2))
    def check(case: Any, node: int) -> None:
        nonlocal sent
        try:
            validate_message(codec.from_dict(RAFT_ROUTES[case.path], case.body))
        except (codec.CodecError, TypeError, ValueError):  # InvalidMessageError included
            pass
        else:
            return  # well-formed: a protocol attack, not malformed input (test_raft_semantics)
        sent += 1
        response = call(cluster, case, node)
        assert response.status_code == 400, (response.status_code, response.text[:200])
        case.validate_response(response, checks=[not_a_server_error, content_type_conformance])

    check()
    assert sent > 0
    cluster.assert_serves()
