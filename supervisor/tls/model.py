"""Value objects of the TLS package: what to issue, and what was found or done.

Owns: CertSpec (the issuing policy, with the defaults and why), the
per-certificate status, change records, the report ``ensure``/``rotate``
return and the per-file description ``certs show`` prints. Does not own any
decision or file access.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor.errors import ConfigError
from supervisor.findings import Finding, Severity
from supervisor.tls.lifetime import DEFAULT_FRACTION, DEFAULT_JITTER, check_aware, days_left
from supervisor.tls.san import SanSet

if TYPE_CHECKING:  # the agent reads reports without loading cryptography
    from cryptography import x509


class KeyType(enum.StrEnum):
    """Key algorithms the agent can issue (the value is the configuration name)."""

    ECDSA_P256 = "ecdsa-p256"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"


def parse_key_type(value: str, *, key: str, source: str) -> KeyType:
    try:
        return KeyType(value.strip().lower())
    except ValueError:
        raise ConfigError(
            key=key,
            value=value,
            source=source,
            reason="unknown key type",
            remedy="use one of " + ", ".join(k.value for k in KeyType),
        ) from None


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

    @property
    def shortest_lifetime(self) -> timedelta:
        return min(self.ca_lifetime, self.server_lifetime, self.client_lifetime)

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

    @classmethod
    def of(cls, name: str, path: str, cert: x509.Certificate, *, key_type: str | None,
           renew_at: datetime | None) -> CertStatus:
        return cls(
            name=name, path=path, serial=cert.serial_number,
            not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
            renew_at=renew_at, key_type=key_type,
            sans=tuple(SanSet.from_certificate(cert).entries()),
        )

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

    def to_json(self) -> dict[str, Any]:
        """For the worker process that does the cryptography for the agent."""
        return {
            "certdir": str(self.certdir),
            "user_managed": self.user_managed,
            "certs": [
                {
                    "name": c.name, "path": c.path, "serial": format(c.serial, "x"),
                    "not_before": c.not_before.isoformat(), "not_after": c.not_after.isoformat(),
                    "renew_at": c.renew_at.isoformat() if c.renew_at else None,
                    "key_type": c.key_type, "sans": list(c.sans),
                }
                for c in self.certs
            ],
            "changes": [
                {"cert": c.cert, "reason": c.reason, "old_serial": c.old_serial,
                 "new_serial": c.new_serial}
                for c in self.changes
            ],
            "written": list(self.written),
            "backed_up": list(self.backed_up),
            "findings": [f.as_dict() for f in self.findings],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CertReport:
        return cls(
            certdir=Path(data["certdir"]),
            user_managed=bool(data["user_managed"]),
            certs=tuple(
                CertStatus(
                    name=c["name"], path=c["path"], serial=int(c["serial"], 16),
                    not_before=datetime.fromisoformat(c["not_before"]),
                    not_after=datetime.fromisoformat(c["not_after"]),
                    renew_at=datetime.fromisoformat(c["renew_at"]) if c["renew_at"] else None,
                    key_type=c["key_type"], sans=tuple(c["sans"]),
                )
                for c in data["certs"]
            ),
            changes=tuple(CertChange(**c) for c in data["changes"]),
            written=tuple(data["written"]),
            backed_up=tuple(data["backed_up"]),
            findings=tuple(
                Finding(topic=f["topic"], severity=Severity[f["severity"].upper()],
                        message=f["message"], remedy=f.get("remedy"))
                for f in data["findings"]
            ),
        )

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
        from cryptography import x509

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
