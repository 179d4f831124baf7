"""The image's health check script (deploy/healthcheck.py), run as Docker runs it: a process
whose exit code says healthy (0) or not (1), against a real node and against scripted servers
(a node without a leader, nothing listening, HTTPS with mutual TLS)."""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from tests.server.cluster import free_ports, start_cluster

from .manifests import DEPLOY

SCRIPT = DEPLOY / "healthcheck.py"


async def run_check(env: Mapping[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        env={"PATH": "/usr/bin:/bin", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def serve(status: int, ssl_context: ssl.SSLContext | None = None) -> web.AppRunner:
    """A stand-in node whose /v1/health answers ``status``."""

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "x"}, status=status)

    app = web.Application()
    app.router.add_get("/v1/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    (port,) = free_ports(1)
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
    return runner


def port_of(runner: web.AppRunner) -> int:
    port: int = runner.addresses[0][1]
    return port


@pytest.fixture
async def runners() -> AsyncIterator[list[web.AppRunner]]:
    started: list[web.AppRunner] = []
    yield started
    for runner in started:
        await runner.cleanup()


async def test_healthy_once_a_real_node_knows_its_leader(tmp_path: Path) -> None:
    cluster = await start_cluster(tmp_path, size=1)
    try:
        server = await cluster.leader()
        code, out = await run_check({"RAFTCACHE_LISTEN": f"0.0.0.0:{server.port}"})
    finally:
        await cluster.stop()
    assert code == 0, out
    assert f"http://127.0.0.1:{server.port}/v1/health: 200" in out


async def test_unhealthy_without_a_leader_or_without_a_node(
    runners: list[web.AppRunner],
) -> None:
    runners.append(await serve(503))
    code, out = await run_check({"RAFTCACHE_LISTEN": f"0.0.0.0:{port_of(runners[0])}"})
    assert code == 1
    assert out.strip().endswith(": 503")
    (closed,) = free_ports(1)
    code, out = await run_check({"RAFTCACHE_LISTEN": f"127.0.0.1:{closed}"})
    assert code == 1, out
    code, _ = await run_check({"RAFTCACHE_HEALTH_URL": f"http://127.0.0.1:{closed}/v1/health"})
    assert code == 1


async def test_https_with_mutual_tls_presents_the_node_certificate(
    runners: list[web.AppRunner], tmp_path: Path
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("n1.example", "127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: no client certificate, no answer
    runners.append(await serve(200, server_ctx))
    cert_file, ca_file = tmp_path / "node.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    ca.cert_pem.write_to_path(str(ca_file))
    env = {"RAFTCACHE_LISTEN": f"0.0.0.0:{port_of(runners[0])}", "RAFTCACHE_TLS_CA": str(ca_file)}

    code, out = await run_check({**env, "RAFTCACHE_TLS_CERT": str(cert_file)})
    assert code == 0, out
    assert out.startswith("https://127.0.0.1:")
    # The same server refuses a client without a certificate: the check really presented one.
    refused = (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)
    with pytest.raises(refused):
        await status_line_over_tls(port_of(runners[0]), ssl.create_default_context(cafile=ca_file))


async def status_line_over_tls(port: int, context: ssl.SSLContext) -> bytes:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="n1.example"
    )
    try:
        writer.write(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        return await reader.readuntil(b"\r\n")  # TLS 1.3 reports a refusal on the first read
    finally:
        writer.close()
