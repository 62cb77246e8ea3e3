"""The certificate set's record (tls/manifest.py) and the worker that does cryptography for the
agent (tls/worker.py): a restart with an unchanged set is decided without cryptography."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from pathlib import Path

import anyio
import pytest
from tls_helpers import NOW, SANS

from supervisor.errors import CertificateError
from supervisor.tls import certs, manifest, worker
from supervisor.tls.model import CertSpec, KeyType
from supervisor.tls.san import SanSet

pytestmark = pytest.mark.unit


def test_an_unchanged_set_passes_the_fast_check(certdir: Path, spec: CertSpec) -> None:
    """After issuance the record matches the files, the SANs and the settings: fast path."""
    certs.ensure(certdir, spec, SANS, NOW)
    record, why = manifest.fast_check(certdir, spec, SANS, NOW + dt.timedelta(days=1))
    assert (record is not None, why) == (True, "")
    assert record is not None
    assert set(record.certs) == {"ca", "server", "client"}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("file", "a file of the set changed"),
        ("due", "due for renewal"),
        ("address", "does not name IP:10.9.8.7"),
        ("key_type", "key type or a lifetime"),
        ("no_record", "no record"),
        ("future_format", "no record"),
    ],
)
def test_anything_else_takes_the_full_path_and_says_why(
    certdir: Path, spec: CertSpec, change: str, reason: str
) -> None:
    """A changed file, a due certificate, a new address, other settings, no record or a record
    of a later format: no fast path, with the reason for the log."""
    certs.ensure(certdir, spec, SANS, NOW)
    now, sans, used_spec = NOW + dt.timedelta(days=1), SANS, spec
    record_path = certdir / manifest.MANIFEST_NAME
    if change == "file":
        (certdir / "client" / "cert.pem").write_bytes(b"replaced by someone\n")
    elif change == "due":
        now = NOW + dt.timedelta(days=25)
    elif change == "address":
        sans = SANS.union(SanSet(ips=frozenset({ipaddress.ip_address("10.9.8.7")})))
    elif change == "key_type":
        used_spec = CertSpec(key_type=KeyType.RSA_2048)
    elif change == "no_record":
        record_path.unlink()
    elif change == "future_format":
        data = json.loads(record_path.read_text())
        record_path.write_text(json.dumps({**data, "format": manifest.FORMAT + 1}))
    record, why = manifest.fast_check(certdir, used_spec, sans, now)
    assert record is None
    assert reason in why


def test_a_user_managed_set_gets_no_record(certdir: Path, spec: CertSpec) -> None:
    """The agent never writes into a user-managed certdir, the record included."""
    certs.ensure(certdir, spec, SANS, NOW)
    for path in (certdir / "ca" / "key.pem", certdir / manifest.MANIFEST_NAME):
        path.unlink()
    certs.ensure(certdir, spec, SANS, NOW)
    assert not (certdir / manifest.MANIFEST_NAME).exists()


def test_worker_round_trip_forked_and_as_a_process(certdir: Path, spec: CertSpec) -> None:
    """The worker issues in a forked child and in `python -m supervisor.tls.worker`; the
    answer carries the report the agent publishes (statuses, changes)."""
    request = worker.request(worker.ENSURE, certdir, spec, SANS, NOW)
    report, restart = worker.answer(worker.run_forked(request))
    assert {c.cert for c in report.changes} == {"ca", "server", "client"}
    assert restart is True
    again, restart_again = worker.answer(anyio.run(worker.run_subprocess, request))
    assert (again.changes, restart_again) == ((), False)
    assert [c.serial for c in again.certs] == [c.serial for c in report.certs]


def test_worker_errors_come_back_as_certificate_errors(certdir: Path, spec: CertSpec) -> None:
    """A set the agent cannot use is a CertificateError in the agent, with path and remedy."""
    certs.ensure(certdir, spec, SANS, NOW)
    (certdir / "server" / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n")
    request = worker.request(worker.ENSURE, certdir, spec, SANS, NOW)
    with pytest.raises(CertificateError) as info:
        worker.answer(worker.handle(request))
    assert info.value.path.endswith("server/cert.pem")
    with pytest.raises(CertificateError, match="failed unexpectedly"):
        worker.answer({"crash": "Traceback ...\nValueError: boom"})
