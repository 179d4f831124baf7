"""No secret ever appears in logs, status, stats, metrics, error messages or repr, and a node
listening beyond loopback without protections says so loudly."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from raftcache.process.config import ConfigError, ServeOptions, resolve_options
from raftcache.process.exposure import exposure_warnings

from .procs import Procs, node_env, wait_exit, wait_status

CLUSTER = "cluster-S3CRET-9f2c"
RW = "rw-S3CRET-41ab"
RO = "ro-S3CRET-77de"
SECRETS = (CLUSTER, RW, RO)
RO_AUTH = {"Authorization": f"Bearer {RO}"}


def options(host: str, **extra: Any) -> ServeOptions:
    base = ServeOptions(id="n1", host=host, port=1, peers={"n1": "http://x:1"}, data_dir=Path("d"))
    return replace(base, **extra)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "localhost"])
def test_no_warning_on_loopback(host: str) -> None:
    assert exposure_warnings(options(host)) == []


def test_one_warning_per_missing_protection() -> None:
    bare = exposure_warnings(options("0.0.0.0"))
    assert len(bare) == 3
    assert any("no cluster token" in w for w in bare)
    assert any("no TLS" in w for w in bare)
    assert any("no client token" in w for w in bare)
    assert len(exposure_warnings(options("node1.example", cluster_token=CLUSTER))) == 2
    safe = options(
        "10.0.0.5", cluster_token=CLUSTER, client_token_ro=RO, tls_cert=Path("c"), tls_key=Path("k")
    )
    assert exposure_warnings(safe) == []


def test_secrets_stay_out_of_repr_and_config_errors(tmp_path: Path) -> None:
    opts = options("127.0.0.1", cluster_token=CLUSTER, client_token=RW, client_token_ro=RO)
    assert not any(secret in repr(opts) for secret in SECRETS)
    config = tmp_path / "node.toml"
    config.write_text(f'cluster_token = ["{CLUSTER}"]\nclient_token = {{ t = "{RW}" }}\n')
    flags = {"id": "n1", "listen": "127.0.0.1:1", "peers": "n1=http://x:1", "data_dir": "d"}
    with pytest.raises(ConfigError) as caught:
        resolve_options(flags, {}, config_path=str(config))
    assert "--cluster-token" in str(caught.value)
    assert not any(secret in str(caught.value) for secret in SECRETS)


@pytest.mark.e2e
async def test_no_secret_in_any_output_of_real_nodes(tmp_path: Path) -> None:
    procs = Procs(tmp_path, env=node_env({"RAFTCACHE_CLIENT_TOKEN": RW}))
    nodes = [procs.add(f"n{i}") for i in (1, 2, 3)]
    seen: list[bytes] = []
    try:
        for node in nodes:
            # All interfaces without TLS; tokens from flags and (read-write) the environment.
            flags = ("--cluster-token", CLUSTER, "--client-token-ro", RO, "--log-level", "debug")
            procs.start(node, nodes, *flags, host="0.0.0.0")
        async with aiohttp.ClientSession() as session:
            for node in nodes:
                status = await wait_status(
                    session, node, {"members": ["n1", "n2", "n3"]}, headers=RO_AUTH
                )
                seen.append(orjson.dumps(status))
            await wait_leader_known(session, [n.url for n in nodes])
            await exercise(session, [n.url for n in nodes], seen)
        for node in nodes:
            assert node.popen is not None
            node.popen.send_signal(signal.SIGTERM)
            assert await wait_exit(node.popen) == 0
    finally:
        procs.stop_all()
    logs = b"".join(node.log.read_bytes() for node in nodes)
    assert b'"level":"debug"' in logs  # the most verbose logs were on
    events = [orjson.loads(line) for line in logs.splitlines()]
    insecure = [e for e in events if e["level"] == "warning" and "INSECURE" in e["event"]]
    assert len(insecure) == 3  # one per node: no TLS (both tokens are set)
    assert all("no TLS" in e["event"] for e in insecure)
    for secret in SECRETS:
        assert secret.encode() not in logs
        for blob in seen:
            assert secret.encode() not in blob


async def wait_leader_known(session: aiohttp.ClientSession, urls: list[str]) -> None:
    for url in urls:
        async with asyncio.timeout(30):
            while True:
                async with session.get(url + "/v1/health") as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.1)


async def exercise(session: aiohttp.ClientSession, urls: list[str], seen: list[bytes]) -> None:
    """Successes and failures of every kind, through every node (followers forward)."""
    rw, ro = {"Authorization": f"Bearer {RW}"}, {"Authorization": f"Bearer {RO}"}
    requests: list[tuple[str, str, bytes, dict[str, str]]] = []
    for url in urls:
        requests += [
            ("PUT", f"{url}/v1/keys/k", b"v", rw),
            ("PUT", f"{url}/v1/keys/k", b"v", ro),
            ("PUT", f"{url}/v1/keys/k", b"v", {"Authorization": f"Bearer {RW}x"}),
            ("GET", f"{url}/v1/keys/k", b"", ro),
            ("GET", f"{url}/v1/keys/%FF", b"", rw),
            ("POST", f"{url}/v1/batch", b"{", rw),
            ("GET", f"{url}/v1/status", b"", ro),
            ("GET", f"{url}/v1/stats", b"", ro),
            ("GET", f"{url}/metrics", b"", ro),
            ("GET", f"{url}/openapi.json", b"", {}),
            ("POST", f"{url}/raft/append-entries", b"{}", {}),
            ("POST", f"{url}/raft/append-entries", b"{}", {"Authorization": f"Bearer {CLUSTER}"}),
            ("POST", f"{url}/raft/request-vote", b"[]", {"Authorization": f"Bearer {RW}"}),
        ]
    for method, url, body, headers in requests:
        async with session.request(method, url, data=body, headers=headers) as resp:
            seen.append(str(resp.status).encode() + b" " + await resp.read())
            seen.append(repr(list(resp.headers.items())).encode())
