"""Helpers for the TLS unit tests: a fixed clock, a SAN set, file snapshots, chain checks."""

from __future__ import annotations

import hashlib
import ipaddress
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.x509 import verification as xv

from supervisor.tls.san import SanSet

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SANS = SanSet(
    dns=frozenset({"docker", "localhost", "dind-host"}),
    ips=frozenset({ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.1.2.3")}),
)


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every file under ``root``: (sha256, mtime_ns, mode), keyed by relative path."""
    found: dict[str, tuple[str, int, int]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path.relative_to(root))] = (digest, st.st_mtime_ns, st.st_mode & 0o777)
    return found


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_all(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def verify_server(
    leaf: x509.Certificate, roots: list[x509.Certificate], name: str, at: datetime
) -> None:
    """Web-PKI server verification for ``name`` (DNS or IP); raises VerificationError."""
    try:
        subject: xv.DNSName | xv.IPAddress = xv.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = xv.DNSName(name)
    builder = xv.PolicyBuilder().store(xv.Store(roots)).time(at)
    builder.build_server_verifier(subject).verify(leaf, [])


def verify_client(leaf: x509.Certificate, roots: list[x509.Certificate], at: datetime) -> None:
    """Client verification; docker:dind's client certificate has no SAN, so allow that."""
    ee = xv.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, xv.Criticality.AGNOSTIC, None
    )
    builder = (
        xv.PolicyBuilder()
        .store(xv.Store(roots))
        .time(at)
        .extension_policies(ca_policy=xv.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee)
    )
    builder.build_client_verifier().verify(leaf, [])
