"""The client over https: a private CA, and a client certificate for mutual TLS."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme

from raftcache.client import AsyncClient, ConnectionFailed, tls_context
from tests.client.client_fakes import FakeCluster


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def mtls_cluster(ca: trustme.CA) -> AsyncIterator[FakeCluster]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    ca.configure_trust(server)
    server.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the client must present a certificate
    fake = FakeCluster(node_ids=["n1"], ssl_context=server)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_mutual_tls_with_private_ca(
    mtls_cluster: FakeCluster, ca: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    client_cert = ca.issue_cert("client@raftcache")
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"
    client_cert.cert_chain_pems[0].write_to_path(str(cert_file))
    client_cert.private_key_pem.write_to_path(str(key_file))
    context = tls_context(str(ca_file), str(cert_file), str(key_file))
    async with AsyncClient(mtls_cluster.endpoints(), ssl_context=context) as client:
        assert await client.set("k", b"v") > 0
        assert await client.get("k") == b"v"
    # Trusting the CA without presenting a certificate is refused by the server.
    no_cert = tls_context(str(ca_file))
    async with AsyncClient(mtls_cluster.endpoints(), ssl_context=no_cert, timeout=0.5) as client:
        with pytest.raises(ConnectionFailed):
            await client.get("k")
    # Without the private CA the server's certificate is not trusted.
    async with AsyncClient(mtls_cluster.endpoints(), timeout=0.5) as client:
        with pytest.raises(ConnectionFailed):
            await client.get("k")
    assert list(mtls_cluster.store) == ["k"]


def test_tls_context_needs_cert_and_key_together() -> None:
    with pytest.raises(ValueError, match="both"):
        tls_context(cert_file="only-cert.pem")
