"""Issuance in docker:dind's layout, reuse without writes, reissue rules, user-managed sets."""

from __future__ import annotations

import ipaddress
import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from tls_helpers import NOW, SANS, load, load_all, snapshot, verify_client, verify_server

from supervisor.errors import CertificateError
from supervisor.findings import Severity
from supervisor.tls import certs
from supervisor.tls.issue import KeyType
from supervisor.tls.manifest import MANIFEST_NAME
from supervisor.tls.model import CertSpec
from supervisor.tls.san import SanSet

pytestmark = pytest.mark.unit

LAYOUT = {
    "ca/cert.pem": 0o644,
    "ca/key.pem": 0o600,
    "server/ca.pem": 0o644,
    "server/cert.pem": 0o644,
    "server/key.pem": 0o600,
    "client/ca.pem": 0o644,
    "client/cert.pem": 0o644,
    "client/key.pem": 0o644,
    MANIFEST_NAME: 0o644,  # the record of the set, for fast restarts (tls/manifest.py)
}


def test_first_issue_layout_and_modes(certdir: Path, spec: CertSpec) -> None:
    """A fresh certdir gets docker:dind's files; private keys 0600, client key 0644."""
    report = certs.ensure(certdir, spec, SANS, NOW)
    found = {rel: mode for rel, (_, _, mode) in snapshot(certdir).items()}
    assert found == LAYOUT
    assert {c.cert for c in report.changes} == {"ca", "server", "client"}
    assert all(c.reason == "missing" and c.old_serial is None for c in report.changes)
    assert (certdir / "ca").stat().st_mode & 0o777 == 0o700
    assert not report.user_managed


def test_client_key_mode_is_configurable(certdir: Path) -> None:
    """client_key_mode=0600 keeps the shared client key private when the user wants that."""
    certs.ensure(certdir, CertSpec(client_key_mode=0o600), SANS, NOW)
    assert (certdir / "client" / "key.pem").stat().st_mode & 0o777 == 0o600


def test_extensions_and_chains(certdir: Path, spec: CertSpec) -> None:
    """CA:true critical, keyCertSign+cRLSign; serverAuth+SANs; clientAuth; the chains verify."""
    certs.ensure(certdir, spec, SANS, NOW)
    ca = load(certdir / "ca" / "cert.pem")
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    server = load(certdir / "server" / "cert.pem")
    client = load(certdir / "client" / "cert.pem")
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert SanSet.from_certificate(server) == SANS
    assert isinstance(server.public_key(), ec.EllipticCurvePublicKey)
    roots = load_all(certdir / "client" / "ca.pem")
    for name in ("docker", "localhost", "dind-host", "127.0.0.1", "10.1.2.3"):
        verify_server(server, roots, name, NOW)
    verify_client(client, load_all(certdir / "server" / "ca.pem"), NOW)
    assert server.serial_number != client.serial_number != ca.serial_number
    assert server.not_valid_after_utc - server.not_valid_before_utc == timedelta(days=30, minutes=1)


def test_rsa_key_type(certdir: Path) -> None:
    """key_type rsa-2048 issues RSA keys for the CA and both leaves."""
    certs.ensure(certdir, CertSpec(key_type=KeyType.RSA_2048), SANS, NOW)
    for rel in ("ca/cert.pem", "server/cert.pem", "client/cert.pem"):
        key = load(certdir / rel).public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        assert key.key_size == 2048


def test_second_call_writes_nothing(certdir: Path, spec: CertSpec) -> None:
    """ensure() with nothing to do leaves bytes and mtimes unchanged and reports no change."""
    certs.ensure(certdir, spec, SANS, NOW)
    before = snapshot(certdir)
    report = certs.ensure(certdir, spec, SANS, NOW + timedelta(days=5))
    assert snapshot(certdir) == before
    assert report.changes == ()
    assert report.written == ()


def test_changed_address_reissues_server_only(certdir: Path, spec: CertSpec) -> None:
    """A new or removed address reissues the server cert for the same key, keeping a backup."""
    certs.ensure(certdir, spec, SANS, NOW)
    before = snapshot(certdir)
    old_server = load(certdir / "server" / "cert.pem")
    moved = SanSet(dns=SANS.dns, ips=frozenset({ipaddress.ip_address("127.0.0.1")}))
    report = certs.ensure(certdir, spec, moved, NOW)
    assert [(c.cert, c.reason) for c in report.changes] == [("server", "sans")]
    assert report.written == ("server/cert.pem",)
    after = snapshot(certdir)
    changed = {rel for rel in after if before.get(rel) != after[rel]}
    assert changed == {
        "server/cert.pem",
        MANIFEST_NAME,
        ".previous/server/ca.pem",
        ".previous/server/cert.pem",
        ".previous/server/key.pem",
    }
    new_server = load(certdir / "server" / "cert.pem")
    assert SanSet.from_certificate(new_server) == moved
    assert new_server.public_key() == old_server.public_key()
    assert (certdir / ".previous" / "server" / "cert.pem").read_bytes() == (
        old_server.public_bytes(Encoding.PEM)
    )


def test_user_managed_never_modified(certdir: Path, spec: CertSpec, tmp_path: Path) -> None:
    """server/{ca,cert,key}.pem without ca/key.pem is verified and never written."""
    certs.ensure(certdir, spec, SANS, NOW)
    (certdir / "ca" / "key.pem").unlink()
    before = snapshot(certdir)
    report = certs.ensure(certdir, spec, SANS, NOW + timedelta(days=25))
    assert snapshot(certdir) == before
    assert report.user_managed
    assert report.written == ()
    server = report.cert("server")
    assert server is not None
    assert server.renew_at is None
    assert server.days_left(NOW + timedelta(days=25)) == pytest.approx(5, abs=0.01)
    warnings = [f.message for f in report.findings if f.severity is Severity.WARNING]
    assert any("expires in" in message for message in warnings)


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("remove_key", "server/key.pem"),
        ("foreign_key", "server/key.pem"),
        ("corrupt_cert", "server/cert.pem"),
        ("foreign_ca", "server/cert.pem"),
        ("expired", "server/cert.pem"),
    ],
)
def test_user_managed_broken_sets_name_the_file(
    certdir: Path, spec: CertSpec, tmp_path: Path, damage: str, named: str
) -> None:
    """A broken user-managed set raises CertificateError naming the file; nothing is written."""
    certs.ensure(certdir, spec, SANS, NOW)
    other = tmp_path / "other"
    certs.ensure(other, spec, SANS, NOW)
    (certdir / "ca" / "key.pem").unlink()
    now = NOW
    if damage == "remove_key":
        (certdir / "server" / "key.pem").unlink()
    elif damage == "foreign_key":
        shutil.copy(other / "server" / "key.pem", certdir / "server" / "key.pem")
    elif damage == "corrupt_cert":
        (certdir / "server" / "cert.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nnope\n")
    elif damage == "foreign_ca":
        shutil.copy(other / "server" / "ca.pem", certdir / "server" / "ca.pem")
    else:
        now = NOW + timedelta(days=31)
    before = snapshot(certdir)
    with pytest.raises(CertificateError) as caught:
        certs.ensure(certdir, spec, SANS, now)
    assert caught.value.path == str(certdir / named)
    assert caught.value.remedy
    assert snapshot(certdir) == before


def test_user_managed_missing_sans_warn(certdir: Path, spec: CertSpec) -> None:
    """A user cert that lacks a wanted address is kept and reported as a warning."""
    certs.ensure(certdir, spec, SANS, NOW)
    (certdir / "ca" / "key.pem").unlink()
    more = SANS.union(SanSet(ips=frozenset({ipaddress.ip_address("192.0.2.9")})))
    report = certs.ensure(certdir, spec, more, NOW)
    assert any("IP:192.0.2.9" in f.message for f in report.findings)


GARBAGE = b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    "rel", ["server/cert.pem", "server/key.pem", "ca/cert.pem", "ca/key.pem", "client/cert.pem"]
)
def test_corrupt_pem_in_managed_set(certdir: Path, spec: CertSpec, rel: str) -> None:
    """A corrupt PEM raises CertificateError naming it and nothing is written (even when due)."""
    certs.ensure(certdir, spec, SANS, NOW)
    (certdir / rel).write_bytes(GARBAGE)
    before = snapshot(certdir)
    with pytest.raises(CertificateError) as caught:
        certs.ensure(certdir, spec, SANS, NOW + timedelta(days=29))
    assert caught.value.path == str(certdir / rel)
    assert "not a valid PEM" in caught.value.message
    assert snapshot(certdir) == before


def test_corrupt_bundle_is_rebuilt_with_backup(certdir: Path, spec: CertSpec) -> None:
    """ca.pem is derived from the CA, so a damaged one is rewritten; the damaged copy is kept."""
    certs.ensure(certdir, spec, SANS, NOW)
    (certdir / "client" / "ca.pem").write_bytes(GARBAGE)
    report = certs.ensure(certdir, spec, SANS, NOW)
    assert report.written == ("client/ca.pem",)
    assert (certdir / ".previous" / "client" / "ca.pem").read_bytes() == GARBAGE
    assert load(certdir / "client" / "ca.pem") == load(certdir / "ca" / "cert.pem")


def test_mismatched_key_in_managed_set(certdir: Path, spec: CertSpec, tmp_path: Path) -> None:
    """A key that does not belong to its cert is an error, never silently replaced."""
    certs.ensure(certdir, spec, SANS, NOW)
    other = tmp_path / "other"
    certs.ensure(other, spec, SANS, NOW)
    shutil.copy(other / "client" / "key.pem", certdir / "client" / "key.pem")
    before = snapshot(certdir)
    with pytest.raises(CertificateError) as caught:
        certs.ensure(certdir, spec, SANS, NOW + timedelta(days=29))
    assert caught.value.path == str(certdir / "client" / "cert.pem")
    assert ".previous/client" in str(caught.value.remedy)
    assert snapshot(certdir) == before


def test_ca_cert_without_key_is_refused(certdir: Path, spec: CertSpec) -> None:
    """ca/cert.pem alone (no key, no server set) is refused rather than replaced."""
    certs.ensure(certdir, spec, SANS, NOW)
    shutil.rmtree(certdir / "server")
    (certdir / "ca" / "key.pem").unlink()
    before = snapshot(certdir)
    with pytest.raises(CertificateError) as caught:
        certs.ensure(certdir, spec, SANS, NOW)
    assert caught.value.path == str(certdir / "ca" / "cert.pem")
    assert snapshot(certdir) == before


def test_missing_key_gets_new_pair(certdir: Path, spec: CertSpec) -> None:
    """A deleted client key yields a new key and a cert for it; the old cert is backed up."""
    certs.ensure(certdir, spec, SANS, NOW)
    old_cert = (certdir / "client" / "cert.pem").read_bytes()
    (certdir / "client" / "key.pem").unlink()
    report = certs.ensure(certdir, spec, SANS, NOW)
    assert [(c.cert, c.reason) for c in report.changes] == [("client", "new_key")]
    assert report.written == ("client/cert.pem", "client/key.pem")
    assert (certdir / ".previous" / "client" / "cert.pem").read_bytes() == old_cert
    assert not (certdir / ".previous" / "client" / "key.pem").exists()
    roots = load_all(certdir / "server" / "ca.pem")
    verify_client(load(certdir / "client" / "cert.pem"), roots, NOW)


def test_existing_key_type_kept_with_info(certdir: Path) -> None:
    """Switching key_type keeps existing keys (no surprise re-key) and says so."""
    certs.ensure(certdir, CertSpec(), SANS, NOW)
    before = snapshot(certdir)
    report = certs.ensure(certdir, CertSpec(key_type=KeyType.RSA_2048), SANS, NOW)
    after = snapshot(certdir)
    # Only the record follows the new setting (so the next start takes the fast path).
    assert {rel for rel in after if before.get(rel) != after[rel]} == {MANIFEST_NAME}
    assert any("existing keys are kept" in f.message for f in report.findings)


def test_describe_is_json_able(certdir: Path, spec: CertSpec) -> None:
    """describe() lists every certificate with subject, SANs, dates and days left, as JSON."""
    certs.ensure(certdir, spec, SANS, NOW)
    infos = certs.describe(certdir, NOW + timedelta(days=10))
    files = [i.file for i in infos]
    assert files == [
        "ca/cert.pem",
        "server/ca.pem",
        "server/cert.pem",
        "client/ca.pem",
        "client/cert.pem",
    ]
    server = infos[2].as_dict()
    decoded = json.loads(json.dumps([i.as_dict() for i in infos]))
    assert decoded[2] == server
    assert server["subject"] == "CN=docker:dind server"
    assert server["issuer"] == "CN=docker:dind CA"
    assert "IP:10.1.2.3" in server["sans"]
    assert server["days_left"] == pytest.approx(20, abs=0.01)
    assert infos[0].is_ca
    assert not infos[2].is_ca


def test_naive_now_is_refused(certdir: Path, spec: CertSpec) -> None:
    """A naive datetime is a programming error, caught before anything is written."""
    with pytest.raises(ValueError, match="timezone-aware"):
        certs.ensure(certdir, spec, SANS, NOW.replace(tzinfo=None))
    assert not certdir.exists()
