"""Container health check of a raftcache node: exit 0 while ``GET /v1/health`` answers 200.

Rule: standard library only (it runs in the image as ``raftcache-healthcheck``, started every few
seconds, so it must start fast and need nothing else), and the same configuration as the node:
the port from ``RAFTCACHE_LISTEN``; with ``RAFTCACHE_TLS_CERT`` set it speaks HTTPS, presenting
that certificate (mutual TLS needs it) and trusting ``RAFTCACHE_TLS_CA``. It asks 127.0.0.1 —
its own node — so the certificate's host name is not checked (the CA still is, when given).
``RAFTCACHE_HEALTH_URL`` overrides the URL. /v1/health needs no client token.

Exit codes: 0 healthy; 1 unhealthy (503: no leader known, or no answer).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

TIMEOUT_S = 3.0


def health_url(env: Mapping[str, str]) -> str:
    """The URL to probe, from the node's own settings."""
    if env.get("RAFTCACHE_HEALTH_URL"):
        return env["RAFTCACHE_HEALTH_URL"]
    port = env.get("RAFTCACHE_LISTEN", "0.0.0.0:8001").rpartition(":")[2] or "8001"
    scheme = "https" if env.get("RAFTCACHE_TLS_CERT") else "http"
    return f"{scheme}://127.0.0.1:{port}/v1/health"


def tls_context(env: Mapping[str, str]) -> ssl.SSLContext | None:
    """A client context for an HTTPS node (None for plain HTTP)."""
    if not env.get("RAFTCACHE_TLS_CERT"):
        return None
    context = ssl.create_default_context(cafile=env.get("RAFTCACHE_TLS_CA") or None)
    context.check_hostname = False  # we dial 127.0.0.1, not the name in the certificate
    if not env.get("RAFTCACHE_TLS_CA"):
        context.verify_mode = ssl.CERT_NONE  # no CA given: our own node, on loopback
    context.load_cert_chain(env["RAFTCACHE_TLS_CERT"], env.get("RAFTCACHE_TLS_KEY") or None)
    return context


def check(env: Mapping[str, str]) -> tuple[bool, str]:
    """Probe once; returns (healthy, one line saying why)."""
    url = health_url(env)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S, context=tls_context(env)) as answer:
            return answer.status == 200, f"{url}: {answer.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: {exc.code}"
    except (OSError, ValueError) as exc:
        return False, f"{url}: {exc}"


def main() -> int:
    healthy, line = check(os.environ)
    print(line)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
