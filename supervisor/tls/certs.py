"""dockerd's certificate folder in docker:dind's layout: issue, reuse, verify, describe.

Owns the one idempotent entry point ``ensure`` (and ``converge``, which
``rotation.rotate`` drives with ``force``) and ``describe`` for ``certs show``.
Blocking by design: the agent runs it with ``anyio.to_thread.run_sync``.
Does not own when to rotate (lifetime.py, rotation.py), cryptography
(issue.py) or file mechanics (store.py).

Layout (docker:dind's, plus three files of ours)::

    ca/cert.pem ca/key.pem          the signing CA (key 0600, folder 0700)
    ca/retired.pem                  earlier CA certificates, trusted until they expire
    server/{ca,cert,key}.pem        what dockerd loads (key 0600)
    client/{ca,cert,key}.pem        what clients load (key 0644 by default)
    .previous/<folder>/*.pem        the generation replaced last (one kept)
    .dind-supervisor.json           the set as last written (manifest.py: fast restarts)

Generations, and what a reader can see. Files are replaced one at a time
(``client/`` and ``server/`` may be mount points, so folders cannot be
swapped). The order keeps every mix a reader can catch usable:

- The server certificate is reissued when its SANs differ from the wanted
  set (a new address, or one removed), when due, expired or not signed by
  the current CA.
- Renewal re-signs a certificate for the SAME key, so old or new cert.pem
  with key.pem always match. The CA is renewed for its same key and name,
  so leaves of either CA generation verify against either CA certificate.
- ca.pem is written before cert.pem, and holds the current CA plus retired
  ones still valid (the overlap), so a new ca.pem never rejects an old leaf.
- An existing key is never replaced. A key is only created where none
  exists; then cert.pem is written before key.pem, so a crash in between
  leaves a certificate without a key (reissued next time), never a
  mismatched pair. A reader in that instant sees a missing key.pem and fails
  as it would have a moment earlier; it never sees one generation's
  certificate with another's key.
- Before the first change to a folder its files are copied to
  ``.previous/<folder>/``: one whole, restorable generation.

A second call with nothing to do opens nothing for writing (bytes and mtimes
unchanged).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from cryptography import x509

from supervisor.errors import CertificateError
from supervisor.findings import Finding, Severity
from supervisor.tls import manifest, store, usermanaged
from supervisor.tls.issue import (
    PrivateKey,
    Role,
    build_ca,
    build_leaf,
    certs_to_pem,
    generate_key,
    key_matches,
    key_to_pem,
    key_type_of,
    signed_by,
)
from supervisor.tls.lifetime import check_aware, renewal_time, rng_for_serial
from supervisor.tls.model import CertChange, CertInfo, CertReport, CertSpec, CertStatus
from supervisor.tls.san import SanSet

FOLDER_FILES: dict[str, tuple[str, ...]] = {
    "ca": ("cert.pem", "key.pem", "retired.pem"),
    "server": ("ca.pem", "cert.pem", "key.pem"),
    "client": ("ca.pem", "cert.pem", "key.pem"),
}
DESCRIBED_FILES = (
    "ca/cert.pem",
    "ca/retired.pem",
    "server/ca.pem",
    "server/cert.pem",
    "client/ca.pem",
    "client/cert.pem",
)


def cert_renewal_time(cert: x509.Certificate, spec: CertSpec) -> datetime:
    """When ``cert`` is due, stable for a given certificate (jitter seeded by its serial)."""
    return renewal_time(
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
        fraction=spec.renew_fraction,
        jitter=spec.renew_jitter,
        rng=rng_for_serial(cert.serial_number),
    )


def _time_reason(cert: x509.Certificate, spec: CertSpec, now: datetime) -> str | None:
    if now >= cert.not_valid_after_utc:
        return "expired"
    if now < cert.not_valid_before_utc:
        return "not_yet_valid"  # the clock went back, or the file came from elsewhere
    if now >= cert_renewal_time(cert, spec):
        return "due"
    return None


class _Writer:
    """Writes files of the certdir, backing each folder up before its first change."""

    def __init__(self, certdir: Path) -> None:
        self.certdir = certdir
        self.written: list[str] = []
        self.backed_up: list[str] = []
        self._saved: set[str] = set()

    def _save(self, folder: str) -> None:
        if folder not in self._saved:
            self.backed_up += store.backup(self.certdir, folder, list(FOLDER_FILES[folder]))
            self._saved.add(folder)

    def write(self, folder: str, name: str, data: bytes, mode: int) -> None:
        self._save(folder)
        store.make_dir(self.certdir / folder, 0o700 if folder == "ca" else 0o755)
        store.write_atomic(self.certdir / folder / name, data, mode=mode)
        self.written.append(f"{folder}/{name}")

    def remove(self, folder: str, name: str) -> None:
        self._save(folder)
        store.remove(self.certdir / folder / name)
        self.written.append(f"{folder}/{name}")


def _mismatch(cert_path: Path, key_path: Path, folder: str) -> CertificateError:
    return CertificateError(
        f"{key_path} does not belong to {cert_path} (their public keys differ)",
        path=str(cert_path),
        remedy=f"restore the matching pair from {store.BACKUP_DIR}/{folder}/, or remove"
        f" both {folder}/cert.pem and {folder}/key.pem to have a new pair issued",
    )


class _Managed:
    """One pass over a certdir whose CA key the agent holds."""

    def __init__(self, certdir: Path, spec: CertSpec, sans: SanSet, now: datetime) -> None:
        self.certdir = certdir
        self.spec = spec
        self.sans = sans
        self.now = now
        self.writer = _Writer(certdir)
        self.changes: list[CertChange] = []
        self.statuses: list[CertStatus] = []
        self.findings: list[Finding] = []
        self.loaded: dict[str, tuple[PrivateKey | None, x509.Certificate | None]] = {}

    def _status(self, name: str, cert: x509.Certificate, key: PrivateKey) -> CertStatus:
        return CertStatus.of(name, f"{name}/cert.pem", cert, key_type=key_type_of(key),
                             renew_at=cert_renewal_time(cert, self.spec))

    def _check_key_type(self, key: PrivateKey, rel: str) -> None:
        found = key_type_of(key)
        if found != self.spec.key_type:
            self.findings.append(
                Finding(
                    topic="tls",
                    severity=Severity.INFO,
                    message=f"{rel} is {found or 'an unsupported key'}, configured key type is"
                    f" {self.spec.key_type}; existing keys are kept",
                    remedy=f"remove {rel} and its cert.pem to get a {self.spec.key_type} key",
                )
            )

    def ca(self) -> tuple[x509.Certificate, PrivateKey, bytes]:
        """The signing CA (renewed if due) and the trust bundle for ca.pem files."""
        folder = self.certdir / "ca"
        key, cert = self.loaded["ca"]
        new_key = key is None
        if key is None:
            key = generate_key(self.spec.key_type)
        retired = store.load_certs(folder / "retired.pem") or []
        reason = "missing" if cert is None else _time_reason(cert, self.spec, self.now)
        if cert is None or reason is not None:
            old = cert
            cert = build_ca(
                key,
                not_before=self.now - self.spec.backdate,
                not_after=self.now + self.spec.ca_lifetime,
            )
            if old is not None:
                retired.insert(0, old)
            self.writer.write("ca", "cert.pem", certs_to_pem([cert]), store.PUBLIC_MODE)
            if new_key:
                self.writer.write("ca", "key.pem", key_to_pem(key), store.PRIVATE_MODE)
            self.changes.append(
                CertChange(
                    cert="ca",
                    reason=reason or "missing",
                    old_serial=old.serial_number if old else None,
                    new_serial=cert.serial_number,
                )
            )
        # The overlap: earlier CA certificates stay trusted until they expire.
        kept: list[x509.Certificate] = []
        for old_ca in retired:
            if old_ca.not_valid_after_utc > self.now and old_ca.serial_number not in {
                c.serial_number for c in [cert, *kept]
            }:
                kept.append(old_ca)
        current = store.read_optional(folder / "retired.pem")
        wanted = certs_to_pem(kept) if kept else None
        if current != wanted:
            if wanted is None:
                self.writer.remove("ca", "retired.pem")
            else:
                self.writer.write("ca", "retired.pem", wanted, store.PUBLIC_MODE)
        self.statuses.append(self._status("ca", cert, key))
        return cert, key, certs_to_pem([cert, *kept])

    def leaf(
        self,
        role: Role,
        ca_cert: x509.Certificate,
        ca_key: PrivateKey,
        bundle: bytes,
        *,
        force: bool,
    ) -> None:
        folder = self.certdir / role
        key, cert = self.loaded[role]
        new_key = key is None
        if key is None:
            key = generate_key(self.spec.key_type)
        reason: str | None
        if cert is None:
            reason = "missing"
        elif new_key:
            reason = "new_key"
        elif not signed_by(cert, ca_cert):
            reason = "issuer"
        elif role == "server" and SanSet.from_certificate(cert) != self.sans:
            # Exact, not "covers": a name the user removed from DOCKER_TLS_SAN or an
            # address the machine lost leaves the certificate too. The agent computes
            # the SAN set once at start, so dynamic addresses (docker0) cannot flap it.
            reason = "sans"
        else:
            reason = _time_reason(cert, self.spec, self.now) or ("forced" if force else None)
        if store.read_optional(folder / "ca.pem") != bundle:
            self.writer.write(role, "ca.pem", bundle, store.PUBLIC_MODE)
        if cert is None or reason is not None:
            old = cert
            cert = build_leaf(
                role=role,
                public_key=key.public_key(),
                ca_cert=ca_cert,
                ca_key=ca_key,
                not_before=self.now - self.spec.backdate,
                # A leaf never outlives its CA: the chain would break first.
                not_after=min(self.now + self.spec.lifetime(role), ca_cert.not_valid_after_utc),
                sans=self.sans if role == "server" else None,
            )
            self.writer.write(role, "cert.pem", certs_to_pem([cert]), store.PUBLIC_MODE)
            if new_key:
                mode = self.spec.client_key_mode if role == "client" else store.PRIVATE_MODE
                self.writer.write(role, "key.pem", key_to_pem(key), mode)
            self.changes.append(
                CertChange(
                    cert=role,
                    reason=reason or "missing",
                    old_serial=old.serial_number if old else None,
                    new_serial=cert.serial_number,
                )
            )
        self.statuses.append(self._status(role, cert, key))

    def load(self) -> None:
        """Read and check every existing key and certificate before anything is written.

        A corrupt file or a mismatched pair anywhere stops the pass here, so a
        bad client folder cannot leave a half-rotated set behind.
        """
        for folder in ("ca", "server", "client"):
            path = self.certdir / folder
            key = store.load_key(path / "key.pem")
            found = store.load_certs(path / "cert.pem")
            cert = found[0] if found else None
            if key is not None and cert is not None and not key_matches(key, cert):
                raise _mismatch(path / "cert.pem", path / "key.pem", folder)
            if key is not None:
                self._check_key_type(key, f"{folder}/key.pem")
            self.loaded[folder] = (key, cert)
        store.load_certs(self.certdir / "ca" / "retired.pem")

    def run(self, *, force_leaves: bool) -> CertReport:
        self.load()
        ca_cert, ca_key, bundle = self.ca()
        for role in ("server", "client"):
            self.leaf(role, ca_cert, ca_key, bundle, force=force_leaves)
        return CertReport(
            certdir=self.certdir,
            user_managed=False,
            certs=tuple(self.statuses),
            changes=tuple(self.changes),
            written=tuple(self.writer.written),
            backed_up=tuple(self.writer.backed_up),
            findings=tuple(self.findings),
        )


def _exists(path: Path) -> bool:
    return store.read_optional(path) is not None


def is_user_managed(certdir: Path) -> bool:
    """A user-managed set: server files present and no CA key (the agent never writes it)."""
    return not _exists(certdir / "ca" / "key.pem") and any(
        _exists(certdir / "server" / n) for n in FOLDER_FILES["server"]
    )


def converge(
    certdir: Path, spec: CertSpec, sans: SanSet, now: datetime, *, force_leaves: bool = False
) -> CertReport:
    """Bring ``certdir`` to a valid, current set; ``force_leaves`` reissues server and client."""
    check_aware(now)
    if not certdir.exists():
        store.make_dir(certdir, 0o755)
    with store.locked(certdir):
        if is_user_managed(certdir):
            return usermanaged.verify(certdir, spec, sans, now)
        if not _exists(certdir / "ca" / "key.pem") and _exists(certdir / "ca" / "cert.pem"):
            raise CertificateError(
                f"{certdir / 'ca' / 'cert.pem'} exists without ca/key.pem and there is no"
                " server set: the agent can neither sign with that CA nor replace it",
                path=str(certdir / "ca" / "cert.pem"),
                remedy="put the CA key in ca/key.pem, or provide server/{ca,cert,key}.pem"
                " (user-managed), or move ca/cert.pem away to get a new CA",
            )
        report = _Managed(certdir, spec, sans, now).run(force_leaves=force_leaves)
        record = manifest.build(certdir, report, spec, sans)
        if manifest.read(certdir) != record:
            manifest.write(certdir, record)
        return report


def ensure(certdir: Path, spec: CertSpec, sans: SanSet, now: datetime) -> CertReport:
    """Issue what is missing or due, keep everything else; idempotent. Blocking."""
    return converge(certdir, spec, sans, now)


def describe(certdir: Path, now: datetime) -> list[CertInfo]:
    """Every certificate in the certdir's PEM files, for ``certs show`` (reads only)."""
    check_aware(now)
    infos: list[CertInfo] = []
    for rel in DESCRIBED_FILES:
        found = store.load_certs(certdir / rel)
        for index, cert in enumerate(found or []):
            infos.append(CertInfo.from_certificate(cert, file=rel, index=index, now=now))
    return infos
