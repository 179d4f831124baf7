"""docs/security.md's throwaway-CA script, extracted from the document and run: its
certificates serve a mutual-TLS cluster, and a client without a certificate is turned away."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.server.cluster import start_cluster

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def extract_script() -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- make-test-ca.sh -->\n```bash\n(.*?)\n```\n", text, re.DOTALL)
    assert match is not None, "the script block is missing from docs/security.md"
    return match.group(1) + "\n"


def make_pki(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: the documented script needs it")
    script = tmp_path / "make-test-ca.sh"
    script.write_text(extract_script(), encoding="utf-8")
    pki = tmp_path / "pki"
    subprocess.run(["bash", str(script), str(pki), "n1", "n2", "n3"], check=True, timeout=120)
    return pki


def client_context(pki: Path, *, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if with_cert:
        context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    return context


async def test_documented_ca_serves_a_mutual_tls_cluster(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    assert sorted(p.name for p in pki.glob("*.pem")) == [
        "ca.pem",
        "client.pem",
        "n1.pem",
        "n2.pem",
        "n3.pem",
    ]
    connector = aiohttp.TCPConnector(ssl=client_context(pki, with_cert=True))
    cluster = await start_cluster(
        tmp_path,
        scheme="https",
        session=aiohttp.ClientSession(connector=connector),
        tls_cert=pki / "n1.pem",  # every node on 127.0.0.1: n1's names cover them all
        tls_key=pki / "n1.key",
        tls_ca=pki / "ca.pem",
    )
    try:
        follower = (await cluster.followers())[0]
        async with cluster.session.put(follower.url + "/v1/keys/k", data=b"mtls") as resp:
            assert resp.status == 200, await resp.text()  # forwarded over mutual TLS
        leader = await cluster.leader()
        async with cluster.session.get(leader.url + "/v1/keys/k") as resp:
            assert await resp.read() == b"mtls"
        anonymous = aiohttp.TCPConnector(ssl=client_context(pki, with_cert=False))
        async with aiohttp.ClientSession(connector=anonymous) as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.get(follower.url + "/v1/health") as resp:
                    await resp.read()
    finally:
        await cluster.stop()
