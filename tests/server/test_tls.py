"""TLS on the shared port: HTTPS for clients and Raft, and mutual TLS when a CA is given."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
import trustme

from .cluster import start_cluster


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "node.pem", "key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    for blob in cert.cert_chain_pems:
        blob.write_to_path(str(files["cert"]), append=True)
    return files


def client_context(pki: dict[str, Path], *, with_cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki["ca"]))
    if with_cert:
        ctx.load_cert_chain(str(pki["cert"]), str(pki["key"]))
    return ctx


async def test_mutual_tls_cluster(tmp_path: Path, pki: dict[str, Path]) -> None:
    connector = aiohttp.TCPConnector(ssl=client_context(pki, with_cert=True))
    cluster = await start_cluster(
        tmp_path,
        scheme="https",
        session=aiohttp.ClientSession(connector=connector),
        tls_cert=pki["cert"],
        tls_key=pki["key"],
        tls_ca=pki["ca"],
    )
    try:
        follower = (await cluster.followers())[0]
        assert follower.url.startswith("https://")
        # Forwarded to the leader over mutual TLS, replicated over mutual TLS.
        async with cluster.session.put(follower.url + "/v1/keys/k", data=b"secure") as resp:
            assert resp.status == 200, await resp.text()
        async with cluster.session.get(follower.url + "/v1/keys/k") as resp:
            assert await resp.read() == b"secure"
        # Without a client certificate the handshake is refused.
        no_cert = aiohttp.TCPConnector(ssl=client_context(pki, with_cert=False))
        async with aiohttp.ClientSession(connector=no_cert) as anonymous:
            with pytest.raises(aiohttp.ClientError):
                async with anonymous.get(follower.url + "/v1/health") as resp:
                    await resp.read()
    finally:
        await cluster.stop()


async def test_tls_without_client_certificates(
    tmp_path: Path, pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without --tls-ca, peers verify each other against the system trust store, which
    # SSL_CERT_FILE points at the test CA here (as an operator would for a private CA).
    monkeypatch.setenv("SSL_CERT_FILE", str(pki["ca"]))
    connector = aiohttp.TCPConnector(ssl=client_context(pki, with_cert=False))
    cluster = await start_cluster(
        tmp_path,
        scheme="https",
        session=aiohttp.ClientSession(connector=connector),
        tls_cert=pki["cert"],
        tls_key=pki["key"],
    )
    try:
        follower = (await cluster.followers())[0]
        async with cluster.session.put(follower.url + "/v1/keys/k", data=b"v") as resp:
            assert resp.status == 200, await resp.text()
    finally:
        await cluster.stop()
