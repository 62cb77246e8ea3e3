"""Rotation timing (2/3 of the lifetime +- jitter), forced rotation, CA overlap, backups."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.x509 import verification as xv
from tls_helpers import NOW, SANS, load, load_all, snapshot, verify_client, verify_server

from supervisor.tls import certs, rotation
from supervisor.tls.model import CertSpec

pytestmark = pytest.mark.unit

DAY = timedelta(days=1)


@pytest.mark.parametrize("seed", range(50))
def test_renewal_time_within_bounds(seed: int) -> None:
    """Renewal falls within 2/3 +- jitter of the lifetime, whatever the random draw."""
    start, end = NOW, NOW + 30 * DAY
    at = rotation.renewal_time(start, end, jitter=0.05, rng=random.Random(seed))
    assert start + 30 * DAY * (2 / 3 - 0.05) <= at <= start + 30 * DAY * (2 / 3 + 0.05)


def test_renewal_time_without_jitter_is_exact() -> None:
    """jitter=0 renews at exactly 2/3 of the lifetime."""
    assert rotation.renewal_time(NOW, NOW + 30 * DAY, jitter=0) == NOW + 20 * DAY


def test_renewal_time_rejects_unbounded_jitter() -> None:
    """A jitter that could push renewal past expiry or before issuance is refused."""
    with pytest.raises(ValueError, match="jitter"):
        rotation.renewal_time(NOW, NOW + DAY, fraction=0.9, jitter=0.2)


def test_retry_delay_doubles_and_caps() -> None:
    """Failed rotations back off 1, 2, 4 ... minutes and never wait more than an hour."""
    assert [rotation.retry_delay(n).total_seconds() for n in range(5)] == [0, 60, 120, 240, 480]
    assert rotation.retry_delay(50) == timedelta(hours=1)


def test_schedule_and_due_rotation(certdir: Path, spec: CertSpec) -> None:
    """next_rotation is the leaves' jittered 2/3 point; rotating then renews them, not before."""
    first = rotation.rotate(certdir, spec, SANS, NOW)
    at = first.next_at
    assert at is not None
    assert NOW + DAY * 30 * (2 / 3 - 0.05) <= at <= NOW + DAY * 30 * (2 / 3 + 0.05) + DAY
    before = snapshot(certdir)
    early = rotation.rotate(certdir, spec, SANS, at - timedelta(seconds=1))
    assert early.changes == ()
    assert not early.restart_dockerd
    assert snapshot(certdir) == before
    due = rotation.rotate(certdir, spec, SANS, at)
    assert due.changes
    assert {c.reason for c in due.changes} == {"due"}
    assert due.restart_dockerd == ("server" in due.rotated)
    assert due.next_at is not None
    assert due.next_at > at


def test_forced_rotation_renews_leaves_for_same_keys(certdir: Path, spec: CertSpec) -> None:
    """force renews server and client now, keeps keys, changes serials and keeps a backup."""
    certs.ensure(certdir, spec, SANS, NOW)
    keys = {r: (certdir / r / "key.pem").read_bytes() for r in ("server", "client")}
    old = {r: load(certdir / r / "cert.pem").serial_number for r in ("server", "client")}
    result = rotation.rotate(certdir, spec, SANS, NOW + DAY, force=True)
    assert result.restart_dockerd
    assert sorted(result.rotated) == ["client", "server"]
    for change in result.changes:
        assert change.reason == "forced"
        assert change.old_serial == old[change.cert]
        assert change.new_serial != change.old_serial
    for role in ("server", "client"):
        assert (certdir / role / "key.pem").read_bytes() == keys[role]
        backup = load(certdir / ".previous" / role / "cert.pem")
        assert backup.serial_number == old[role]
        assert (certdir / ".previous" / role / "key.pem").read_bytes() == keys[role]


def test_ca_renewal_overlap(certdir: Path) -> None:
    """At 2/3 of its life the CA is renewed; old and new CA are both trusted until the old expires.

    A client holding the old ca.pem and one holding the new bundle both verify
    the new server certificate, and dockerd's bundle accepts client certificates
    from either CA generation.
    """
    spec = CertSpec(ca_lifetime=90 * DAY, server_lifetime=30 * DAY, client_lifetime=30 * DAY)
    certs.ensure(certdir, spec, SANS, NOW)
    old_bundle = load_all(certdir / "client" / "ca.pem")
    old_ca = old_bundle[0]
    ca_due = certs.cert_renewal_time(old_ca, spec)
    assert NOW + 90 * DAY * (2 / 3 - 0.05) <= ca_due <= NOW + 90 * DAY * (2 / 3 + 0.05) + DAY
    rotation.rotate(certdir, spec, SANS, ca_due - DAY, force=True)
    old_client = load(certdir / "client" / "cert.pem")  # issued under the old CA certificate
    result = rotation.rotate(certdir, spec, SANS, ca_due, force=True)
    assert "ca" in result.rotated
    assert result.restart_dockerd
    new_bundle = load_all(certdir / "client" / "ca.pem")
    assert [c.serial_number for c in new_bundle][1:] == [old_ca.serial_number]
    assert load_all(certdir / "server" / "ca.pem") == new_bundle
    assert load_all(certdir / "ca" / "retired.pem") == [old_ca]
    new_server = load(certdir / "server" / "cert.pem")
    assert new_server.issuer == new_bundle[0].subject
    during = ca_due + DAY
    verify_server(new_server, old_bundle, "docker", during)
    verify_server(new_server, new_bundle, "docker", during)
    verify_server(new_server, [new_bundle[0]], "docker", during)
    verify_client(old_client, load_all(certdir / "server" / "ca.pem"), during)
    # After the old CA expires it leaves the bundles; the new CA alone still verifies.
    after = old_ca.not_valid_after_utc + timedelta(seconds=1)
    late = rotation.rotate(certdir, spec, SANS, after)
    assert len(load_all(certdir / "server" / "ca.pem")) == 1
    assert not (certdir / "ca" / "retired.pem").exists()
    assert (certdir / ".previous" / "ca" / "retired.pem").exists()
    verify_server(load(certdir / "server" / "cert.pem"), [new_bundle[0]], "docker", after)
    with pytest.raises(xv.VerificationError):
        verify_server(load(certdir / "server" / "cert.pem"), [old_ca], "docker", after)
    assert late.restart_dockerd


def test_leaf_never_outlives_its_ca(certdir: Path) -> None:
    """A leaf issued near the CA's end is cut at the CA's not_after."""
    spec = CertSpec(ca_lifetime=10 * DAY, server_lifetime=30 * DAY, client_lifetime=30 * DAY)
    certs.ensure(certdir, spec, SANS, NOW)
    ca = load(certdir / "ca" / "cert.pem")
    assert load(certdir / "server" / "cert.pem").not_valid_after_utc == ca.not_valid_after_utc


def test_user_managed_has_no_schedule(certdir: Path, spec: CertSpec) -> None:
    """A user-managed set is never rotated (even forced): next_rotation is None, nothing written."""
    certs.ensure(certdir, spec, SANS, NOW)
    (certdir / "ca" / "key.pem").unlink()
    before = snapshot(certdir)
    result = rotation.rotate(certdir, spec, SANS, NOW + DAY, force=True)
    assert result.next_at is None
    assert result.changes == ()
    assert not result.restart_dockerd
    assert snapshot(certdir) == before
