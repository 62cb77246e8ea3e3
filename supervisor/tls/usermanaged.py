"""Checking a user-managed certificate set, read-only.

A certdir is user-managed when server/{ca,cert,key}.pem exist and there is
no ca/key.pem: the agent cannot sign, so it only verifies (chain, key match,
validity) and reports days left so the agent can warn as expiry nears. Owns
that verification; never opens a file for writing. A broken server set
raises CertificateError naming the file; problems with the optional client
folder are warnings (dockerd serves without it).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from supervisor.errors import CertificateError
from supervisor.findings import Finding, Severity
from supervisor.tls import store
from supervisor.tls.issue import extended_key_usages, key_matches, key_type_of, signed_by
from supervisor.tls.model import CertReport, CertSpec, CertStatus
from supervisor.tls.san import SanSet

LEAF_FILES = ("ca.pem", "cert.pem", "key.pem")
_MAX_CHAIN = 6
_MOVE_AWAY = (
    "or move server/ away (and keep no ca/key.pem) to let the agent issue its own CA"
)


def chain_anchor(
    chain: list[x509.Certificate], bundle: list[x509.Certificate]
) -> x509.Certificate | None:
    """The certificate of ``bundle`` that the leaf chains to, through ``chain[1:]`` if needed."""
    current = chain[0]
    intermediates = chain[1:]
    for _ in range(_MAX_CHAIN):
        anchor = next((ca for ca in bundle if signed_by(current, ca)), None)
        if anchor is not None:
            return anchor
        step = next((ca for ca in intermediates if signed_by(current, ca)), None)
        if step is None:
            return None
        current = step
    return None


def _check_set(
    folder: Path, rel: str, now: datetime
) -> tuple[x509.Certificate, x509.Certificate, str | None]:
    """(leaf, anchor, key type) of a complete, consistent set, or CertificateError."""
    for name in LEAF_FILES:
        if store.read_optional(folder / name) is None:
            raise CertificateError(
                f"user-managed TLS set is incomplete: {folder / name} is missing or empty",
                path=str(folder / name),
                remedy=f"put {rel}/{name} in place, {_MOVE_AWAY}",
            )
    bundle = store.load_certs(folder / "ca.pem") or []
    chain = store.load_certs(folder / "cert.pem") or []
    key = store.load_key(folder / "key.pem")
    if key is None or not chain:  # only if a file vanished since the check above
        raise CertificateError(
            f"{folder} changed while it was being checked",
            path=str(folder),
            remedy="start again once the files are in place",
        )
    leaf = chain[0]
    if not key_matches(key, leaf):
        raise CertificateError(
            f"{folder / 'key.pem'} does not belong to {folder / 'cert.pem'}"
            " (their public keys differ)",
            path=str(folder / "key.pem"),
            remedy=f"put the key that was issued with {rel}/cert.pem in place (compare"
            " `openssl x509 -noout -pubkey` with `openssl pkey -pubout`)",
        )
    anchor = chain_anchor(chain, bundle)
    if anchor is None:
        raise CertificateError(
            f"{folder / 'cert.pem'} is not signed by any certificate in {folder / 'ca.pem'}",
            path=str(folder / "cert.pem"),
            remedy=f"put the issuing CA in {rel}/ca.pem (append intermediates to"
            f" {rel}/cert.pem after the leaf)",
        )
    for cert, path in ((leaf, folder / "cert.pem"), (anchor, folder / "ca.pem")):
        if now >= cert.not_valid_after_utc:
            raise CertificateError(
                f"{path} expired on {cert.not_valid_after_utc.isoformat()}",
                path=str(path),
                remedy=f"replace {path} with a renewed certificate, {_MOVE_AWAY}",
            )
        if now < cert.not_valid_before_utc:
            raise CertificateError(
                f"{path} is not valid before {cert.not_valid_before_utc.isoformat()}"
                f" (now is {now.isoformat()})",
                path=str(path),
                remedy="check the system clock, or reissue the certificate",
            )
    return leaf, anchor, key_type_of(key)


def verify(certdir: Path, spec: CertSpec, sans: SanSet, now: datetime) -> CertReport:
    """Verify the user's server set (errors) and client set (warnings); write nothing."""
    leaf, anchor, key_type = _check_set(certdir / "server", "server", now)
    findings: list[Finding] = []
    missing = sans.missing_from(SanSet.from_certificate(leaf))
    if not missing.is_empty():
        findings.append(
            Finding(
                topic="tls",
                severity=Severity.WARNING,
                message="the user-managed server certificate does not cover "
                + " ".join(missing.entries()),
                remedy="clients connecting by those names or addresses will be refused;"
                " reissue server/cert.pem with them if they are used",
                data={"missing": missing.entries()},
            )
        )
    eku = extended_key_usages(leaf)
    if eku and ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        findings.append(
            Finding(
                topic="tls",
                severity=Severity.WARNING,
                message="server/cert.pem lacks the serverAuth extended key usage",
                remedy="docker clients will refuse it; reissue it with extendedKeyUsage=serverAuth",
            )
        )
    statuses = [
        CertStatus.of("ca", "server/ca.pem", anchor, key_type=None, renew_at=None),
        CertStatus.of("server", "server/cert.pem", leaf, key_type=key_type, renew_at=None),
    ]
    client = certdir / "client"
    if any(store.read_optional(client / n) is not None for n in LEAF_FILES):
        try:
            c_leaf, _, c_type = _check_set(client, "client", now)
        except CertificateError as err:
            findings.append(
                Finding(topic="tls", severity=Severity.WARNING, message=err.message,
                        remedy=err.remedy, data={"path": err.path})
            )
        else:
            statuses.append(CertStatus.of("client", "client/cert.pem", c_leaf, key_type=c_type,
                                          renew_at=None))
    for status in statuses:
        left = status.not_after - now
        if left < spec.expiry_warning:
            findings.append(
                Finding(
                    topic="tls",
                    severity=Severity.WARNING,
                    message=f"user-managed {status.path} expires in"
                    f" {status.days_left(now):.1f} days ({status.not_after.isoformat()})",
                    remedy=f"renew {status.path}; the agent cannot renew a CA it has no key for",
                    data={"cert": status.name, "days_left": round(status.days_left(now), 3)},
                )
            )
    return CertReport(
        certdir=certdir, user_managed=True, certs=tuple(statuses), findings=tuple(findings)
    )
