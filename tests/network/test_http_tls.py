"""HttpNetwork and StreamNetwork with TLS and mutual TLS, from throwaway certificates made by
trustme (the stream is upgraded from the same TLS listener, so the same rules must hold)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from raftcache.network import HttpNetwork, NetworkError
from raftcache.network.stream import StreamNetwork
from raftcache.raft.messages import RequestVoteRequest

from .conftest import Pki
from .fakes import RecordingHandlers

VOTE = RequestVoteRequest(1, "a", 0, 0)


Factory = Callable[..., Awaitable[HttpNetwork]]


@pytest.fixture(params=[HttpNetwork, StreamNetwork], ids=["http", "stream"])
async def make_node(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    started: list[HttpNetwork] = []
    cls: type[HttpNetwork] = request.param

    async def make(node_id: str, **opts: Any) -> HttpNetwork:
        net = cls(node_id, port=0, node_addresses={}, **opts)
        net.register_handlers(RecordingHandlers(node_id))
        await net.start()
        started.append(net)
        return net

    yield make
    for net in started:
        await net.stop()


def tls(pki: Pki, **extra: Any) -> dict[str, Any]:
    return {"ssl_certfile": pki.cert, "ssl_keyfile": pki.key, "ssl_cafile": pki.ca, **extra}


def point(sender: HttpNetwork, target: HttpNetwork, scheme: str = "https") -> None:
    sender.set_peer_address(target.node_id, f"{scheme}://127.0.0.1:{target.port}")


async def test_tls_between_two_nodes(make_node: Factory, pki: Pki) -> None:
    a, b = await make_node("a", **tls(pki)), await make_node("b", **tls(pki))
    point(a, b)
    point(b, a)
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    assert (await b.send_request_vote("a", VOTE)).vote_granted


async def test_plain_http_to_a_tls_port_fails(make_node: Factory, pki: Pki) -> None:
    a, b = await make_node("a"), await make_node("b", **tls(pki))
    point(a, b, scheme="http")
    with pytest.raises(NetworkError):
        await a.send_request_vote("b", VOTE)


async def test_untrusted_server_certificate_is_permanent(make_node: Factory, pki: Pki) -> None:
    a = await make_node("a", ssl_cafile=pki.other_ca)  # trusts the wrong CA
    b = await make_node("b", **tls(pki))
    point(a, b)
    with pytest.raises(NetworkError, match="TLS") as info:
        await a.send_request_vote("b", VOTE)
    assert info.value.permanent


async def test_mutual_tls(make_node: Factory, pki: Pki) -> None:
    a = await make_node("a", **tls(pki))
    b = await make_node("b", **tls(pki, require_client_cert=True))
    point(a, b)
    assert (await a.send_request_vote("b", VOTE)).vote_granted
    handlers = b._handlers
    assert isinstance(handlers, RecordingHandlers)
    assert len(handlers.calls) == 1

    # A client that trusts the server but shows no certificate is turned away...
    no_cert = await make_node("c", ssl_cafile=pki.ca)
    point(no_cert, b)
    with pytest.raises(NetworkError):
        await no_cert.send_request_vote("b", VOTE)
    ctx = ssl.create_default_context(cafile=pki.ca)
    connector = aiohttp.TCPConnector(ssl=ctx)
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
            async with session.post(f"https://127.0.0.1:{b.port}/raft/request-vote", data=b"{}"):
                pass
    # ...and so is one whose certificate another CA signed.
    evil = await make_node(
        "d", ssl_certfile=pki.other_cert, ssl_keyfile=pki.other_key, ssl_cafile=pki.ca
    )
    point(evil, b)
    with pytest.raises(NetworkError):
        await evil.send_request_vote("b", VOTE)
    assert len(handlers.calls) == 1


def test_mutual_tls_needs_a_ca(pki: Pki) -> None:
    with pytest.raises(ValueError, match="ssl_cafile"):
        HttpNetwork(
            "a",
            port=0,
            node_addresses={},
            ssl_certfile=pki.cert,
            ssl_keyfile=pki.key,
            require_client_cert=True,
        )
