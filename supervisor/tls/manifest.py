"""A record of the certificate set as the agent issued it, for deciding a restart in microseconds.

Most dind containers with a volume are restarts, and on a restart the set
is usually still good. Proving that with ``cryptography`` (load, parse,
verify the chain) costs tens of milliseconds and as many megabytes before
dockerd may start. So whenever the agent writes or verifies a managed set it
also writes ``$CERTDIR/.dind-supervisor.json``: the SHA-256 of every file,
each certificate's validity and renewal time, the SANs and key type it was
issued for. At start, ``fast_check`` compares that record with the files and
the clock (hashlib and json only): all equal, not due, the current SANs
covered, the same settings, and dockerd can start at once; the full check
then runs beside it. Anything else, and the full path runs before the
spawn. A user-managed set is never written to, so it has no record and
always takes the full path.

The record has a ``format`` number; a reader that does not know it treats
the record as absent (never as valid), so later agents may extend it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.atomicfile import replace_file
from supervisor.tls.model import CertReport, CertSpec
from supervisor.tls.san import SanSet

MANIFEST_NAME = ".dind-supervisor.json"
FORMAT = 1
RECORDED_FILES = (
    "ca/cert.pem", "ca/key.pem", "ca/retired.pem",
    "server/ca.pem", "server/cert.pem", "server/key.pem",
    "client/ca.pem", "client/cert.pem", "client/key.pem",
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class CertTimes:
    not_before: dt.datetime
    not_after: dt.datetime
    renew_at: dt.datetime | None
    serial: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    key_type: str
    lifetimes: dict[str, float]  # seconds, by certificate name
    sans: tuple[str, ...]
    files: dict[str, str]  # relative path -> sha256 hex; absent files are not listed
    certs: dict[str, CertTimes]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "key_type": self.key_type,
            "lifetimes": self.lifetimes,
            "sans": list(self.sans),
            "files": self.files,
            "certs": {
                name: {
                    "not_before": t.not_before.isoformat(),
                    "not_after": t.not_after.isoformat(),
                    "renew_at": t.renew_at.isoformat() if t.renew_at else None,
                    "serial": t.serial,
                }
                for name, t in self.certs.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest | None:
        if data.get("format") != FORMAT:
            return None
        try:
            return cls(
                key_type=str(data["key_type"]),
                lifetimes={k: float(v) for k, v in data["lifetimes"].items()},
                sans=tuple(str(s) for s in data["sans"]),
                files={str(k): str(v) for k, v in data["files"].items()},
                certs={
                    name: CertTimes(
                        not_before=dt.datetime.fromisoformat(t["not_before"]),
                        not_after=dt.datetime.fromisoformat(t["not_after"]),
                        renew_at=(dt.datetime.fromisoformat(t["renew_at"])
                                  if t.get("renew_at") else None),
                        serial=str(t["serial"]),
                    )
                    for name, t in data["certs"].items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def _lifetimes(spec: CertSpec) -> dict[str, float]:
    return {name: spec.lifetime(name).total_seconds() for name in ("ca", "server", "client")}


def file_hashes(certdir: Path) -> dict[str, str]:
    found = {}
    for rel in RECORDED_FILES:
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
            found[rel] = hashlib.sha256((certdir / rel).read_bytes()).hexdigest()
    return found


def build(certdir: Path, report: CertReport, spec: CertSpec, sans: SanSet) -> Manifest:
    """The record of a managed set the agent just wrote or verified."""
    return Manifest(
        key_type=spec.key_type.value,
        lifetimes=_lifetimes(spec),
        sans=tuple(sans.entries()),
        files=file_hashes(certdir),
        certs={
            c.name: CertTimes(not_before=c.not_before, not_after=c.not_after,
                              renew_at=c.renew_at, serial=format(c.serial, "x"))
            for c in report.certs
        },
    )


def write(certdir: Path, manifest: Manifest) -> None:
    """Atomically; a failure leaves the old record or none, both safe (full path next time)."""
    path = certdir / MANIFEST_NAME
    data = (json.dumps(manifest.to_json(), indent=1, sort_keys=True) + "\n").encode()
    with contextlib.suppress(OSError):
        replace_file(path, data)


def forget(certdir: Path) -> None:
    with contextlib.suppress(OSError):
        (certdir / MANIFEST_NAME).unlink()


def read(certdir: Path) -> Manifest | None:
    try:
        data = json.loads((certdir / MANIFEST_NAME).read_bytes())
    except (OSError, ValueError):
        return None
    return Manifest.from_json(data) if isinstance(data, dict) else None


def fast_check(
    certdir: Path, spec: CertSpec, sans: SanSet, now: dt.datetime
) -> tuple[Manifest | None, str]:
    """(the manifest, "") when the set on disk is the recorded one and nothing is due;
    (None, why not) otherwise. Reads a few small files; no cryptography."""
    manifest = read(certdir)
    if manifest is None:
        return None, "no record of the certificate set (first start, or a user-managed set)"
    if manifest.key_type != spec.key_type.value or manifest.lifetimes != _lifetimes(spec):
        return None, "the key type or a lifetime setting changed"
    missing = set(sans.entries()) - set(manifest.sans)
    if missing:
        return None, f"the server certificate does not name {sorted(missing)[0]}"
    if set(manifest.sans) - set(sans.entries()):
        return None, "the server certificate names an address this container no longer has"
    for name in ("ca", "server", "client"):
        times = manifest.certs.get(name)
        if times is None:
            return None, f"no {name} certificate recorded"
        if not times.not_before <= now < times.not_after:
            return None, f"the {name} certificate is not valid now"
        if times.renew_at is not None and now >= times.renew_at:
            return None, f"the {name} certificate is due for renewal"
    if file_hashes(certdir) != manifest.files:
        return None, "a file of the set changed since it was recorded"
    return manifest, ""
