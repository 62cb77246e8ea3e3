"""Where the certificate files live in docker:dind's certdir layout.

A leaf without cryptography: dockerd's argv, the readiness probe and the
HTTP endpoint need the paths long before (or without) anything parses a
certificate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    @classmethod
    def of(cls, certdir: Path | str, folder: str) -> TlsFiles:
        """``folder`` is server or client: its ca.pem, cert.pem and key.pem."""
        base = Path(certdir) / folder
        return cls(ca=base / "ca.pem", cert=base / "cert.pem", key=base / "key.pem")

    def all_present(self) -> bool:
        return all(_nonempty(path) for path in (self.ca, self.cert, self.key))


def _nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False
