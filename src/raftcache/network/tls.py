"""TLS contexts for the HTTP transport, built from certificate files.

Rule: one certificate per node serves both directions. The server presents
``certfile``/``keyfile``; with ``require_client_cert`` it demands a client certificate signed by
``cafile`` (mutual TLS). The client trusts ``cafile`` (else the system store), verifies host
names against the URL (so certificates must name the addresses in ``node_addresses``, e.g. an
IP SAN ``127.0.0.1``), and presents the node's own certificate when it has one, which is what a
mutual-TLS peer asks for.
"""

from __future__ import annotations

import ssl

__all__ = ["client_ssl_context", "server_ssl_context"]


def server_ssl_context(
    certfile: str,
    keyfile: str | None,
    cafile: str | None = None,
    *,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """The listening side's context.

    Args:
        certfile: PEM certificate chain of this node.
        keyfile: PEM private key (None: inside ``certfile``).
        cafile: PEM bundle of the CA that signs client certificates.
        require_client_cert: reject clients without a certificate signed by ``cafile``.

    Raises:
        ValueError: ``require_client_cert`` without ``cafile``.
    """
    if require_client_cert and cafile is None:
        raise ValueError("require_client_cert needs ssl_cafile to verify client certificates")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certfile, keyfile)
    if cafile is not None:
        ctx.load_verify_locations(cafile)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return ctx


def client_ssl_context(
    cafile: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> ssl.SSLContext:
    """The connecting side's context: verifies the server, presents ``certfile`` if given."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile is not None:
        ctx.load_cert_chain(certfile, keyfile)
    return ctx
