"""Warnings for a node exposed beyond loopback without its protections.

Rule: the node still starts — a test network or a private LAN may be fine — but the operator is
told loudly, at WARNING, once per missing protection (cluster token, TLS, client token), and
never with a secret in the line.
"""

from __future__ import annotations

import ipaddress
import logging

from raftcache.process.config import ServeOptions

log = logging.getLogger("raftcache.server")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public address: assume the worst


def exposure_warnings(options: ServeOptions) -> list[str]:
    """What an operator must hear about a node listening beyond loopback unprotected."""
    if is_loopback(options.host):
        return []
    warnings = []
    if options.cluster_token is None:
        warnings.append(
            "no cluster token: anyone who can reach this port can send Raft messages, "
            "disrupt the cluster and rewrite its log (set --cluster-token)"
        )
    if options.tls_cert is None:
        warnings.append(
            "no TLS: tokens, keys and values cross the network in clear text "
            "(set --tls-cert/--tls-key, and --tls-ca for mutual TLS)"
        )
    if options.client_token is None and options.client_token_ro is None:
        warnings.append(
            "no client token: anyone who can reach this port can read and write every key "
            "(set --client-token)"
        )
    return warnings


def warn_if_exposed(options: ServeOptions) -> None:
    """Log one WARNING line per missing protection when listening beyond loopback."""
    for warning in exposure_warnings(options):
        log.warning(
            "INSECURE: listening beyond loopback with " + warning,
            extra={"id": options.id, "listen": options.listen},
        )
