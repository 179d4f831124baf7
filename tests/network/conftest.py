"""Network tests share the suite-wide hooks of ``tests/conftest.py`` (the looptime event-loop
leak guard lives there), and the throwaway certificates of the TLS tests (``pki``).

Rule: tests here leak nothing: no event loops, sockets, tasks or default-hub state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme


@dataclass
class Pki:
    ca: str
    cert: str
    key: str
    other_ca: str
    other_cert: str
    other_key: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with a node certificate for 127.0.0.1, and an unrelated CA with its own."""
    base = tmp_path_factory.mktemp("pki")

    def issue(ca: trustme.CA, name: str) -> tuple[str, str, str]:
        cert = ca.issue_cert("127.0.0.1", "localhost")
        paths = [base / f"{name}-ca.pem", base / f"{name}-cert.pem", base / f"{name}-key.pem"]
        ca.cert_pem.write_to_path(str(paths[0]))
        Path(paths[1]).write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
        cert.private_key_pem.write_to_path(str(paths[2]))
        return str(paths[0]), str(paths[1]), str(paths[2])

    ca, cert, key = issue(trustme.CA(), "good")
    other_ca, other_cert, other_key = issue(trustme.CA(), "evil")
    return Pki(ca, cert, key, other_ca, other_cert, other_key)
