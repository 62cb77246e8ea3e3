"""Value objects of the TLS package: what to issue, and what was found or done.

Owns: CertSpec (the issuing policy, with the defaults and why), the
per-certificate status, change records, the report ``ensure``/``rotate``
return and the per-file description ``certs show`` prints. Does not own any
decision or file access.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from supervisor.findings import Finding
from supervisor.tls.issue import KeyType
from supervisor.tls.lifetime import DEFAULT_FRACTION, DEFAULT_JITTER, check_aware, days_left
from supervisor.tls.san import SanSet

CERT_NAMES = ("ca", "server", "client")


@dataclass(frozen=True, slots=True, kw_only=True)
class CertSpec:
    """How the agent issues certificates. The defaults, and why:

    - ``key_type`` ECDSA P-256: a full CA+server+client set takes
      milliseconds instead of seconds (RSA-4096 is docker:dind's choice and
      most of its start time), handshakes are smaller, and every docker
      CLI/SDK (Go, Python, Java) supports it.
    - ``ca_lifetime`` 5 years: ca.pem is copied into other machines' client
      configuration; a long-lived anchor keeps those copies working. The CA
      key never leaves the certdir, renewal at 2/3 reuses it, so copies of an
      old ca.pem keep verifying new leaves until that copy expires.
    - ``server_lifetime``/``client_lifetime`` 30 days: short leaves limit
      what a leaked client key (client/key.pem is world-readable by design)
      is worth; renewal at 2/3 means one dockerd restart about every 20 days,
      which --live-restore makes invisible to running containers.
    - ``backdate`` 1 minute: clients on other hosts with a slightly slow clock
      still accept a fresh certificate.
    - ``client_key_mode`` 0644: docker:dind makes client/key.pem readable by
      all so other containers sharing the client folder can use it.
    - ``expiry_warning`` 14 days: a user-managed set closer than this to its
      end gets a warning finding (the agent cannot renew it).
    """

    key_type: KeyType = KeyType.ECDSA_P256
    ca_lifetime: timedelta = timedelta(days=5 * 365)
    server_lifetime: timedelta = timedelta(days=30)
    client_lifetime: timedelta = timedelta(days=30)
    renew_fraction: float = DEFAULT_FRACTION
    renew_jitter: float = DEFAULT_JITTER
    backdate: timedelta = timedelta(minutes=1)
    client_key_mode: int = 0o644
    expiry_warning: timedelta = timedelta(days=14)

    def __post_init__(self) -> None:
        for name in ("ca_lifetime", "server_lifetime", "client_lifetime"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.backdate < timedelta(0):
            raise ValueError(f"backdate must not be negative, got {self.backdate}")
        if not 0 < self.renew_fraction < 1:
            raise ValueError(f"renew_fraction must be in (0, 1), got {self.renew_fraction}")
        bound = min(self.renew_fraction, 1 - self.renew_fraction)
        if not 0 <= self.renew_jitter < bound:
            raise ValueError(f"renew_jitter must be in [0, {bound:.3f}), got {self.renew_jitter}")
        if not 0 <= self.client_key_mode <= 0o777:
            raise ValueError(f"client_key_mode must be a file mode, got {self.client_key_mode:o}")

    def lifetime(self, name: str) -> timedelta:
        return {
            "ca": self.ca_lifetime,
            "server": self.server_lifetime,
            "client": self.client_lifetime,
        }[name]


@dataclass(frozen=True, slots=True, kw_only=True)
class CertStatus:
    """One certificate in use: ``name`` is ca, server or client (the metric label)."""

    name: str
    path: str
    serial: int
    not_before: datetime
    not_after: datetime
    renew_at: datetime | None  # None when the agent cannot renew it (user-managed)
    key_type: str | None
    sans: tuple[str, ...] = ()

    def days_left(self, now: datetime) -> float:
        return days_left(self.not_after, now)


@dataclass(frozen=True, slots=True, kw_only=True)
class CertChange:
    """A certificate the agent (re)issued; ``old_serial`` is None for a first issue."""

    cert: str
    reason: str  # missing, new_key, issuer, expired, not_yet_valid, sans, forced, due
    old_serial: int | None
    new_serial: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CertReport:
    """What ``ensure``/``rotate`` found and did. Paths are relative to ``certdir``."""

    certdir: Path
    user_managed: bool
    certs: tuple[CertStatus, ...]
    changes: tuple[CertChange, ...] = ()
    written: tuple[str, ...] = ()
    backed_up: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()

    def cert(self, name: str) -> CertStatus | None:
        return next((c for c in self.certs if c.name == name), None)

    @property
    def server_changed(self) -> bool:
        """dockerd reads server/ only at start, so any change there needs a restart."""
        return any(path.startswith("server/") for path in self.written)


@dataclass(frozen=True, slots=True, kw_only=True)
class CertInfo:
    """One certificate found in a file of the certdir (``certs show``)."""

    file: str
    index: int  # position in a bundle (ca.pem holds old and new CA during an overlap)
    subject: str
    issuer: str
    sans: tuple[str, ...]
    serial: int
    not_before: datetime
    not_after: datetime
    days_left: float
    is_ca: bool

    @classmethod
    def from_certificate(
        cls, cert: x509.Certificate, *, file: str, index: int, now: datetime
    ) -> CertInfo:
        check_aware(now)
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        return cls(
            file=file,
            index=index,
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            sans=tuple(SanSet.from_certificate(cert).entries()),
            serial=cert.serial_number,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            days_left=round(days_left(cert.not_valid_after_utc, now), 3),
            is_ca=is_ca,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "index": self.index,
            "subject": self.subject,
            "issuer": self.issuer,
            "sans": list(self.sans),
            "serial": f"{self.serial:x}",
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "days_left": self.days_left,
            "is_ca": self.is_ca,
        }
