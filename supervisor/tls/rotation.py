"""When to rotate dockerd's certificates, and the rotation entry point.

Owns the schedule (``next_rotation``), the retry delay after a failed
rotation, and ``rotate``, which renews what is due (or the leaves now, for
``certs rotate``) and says whether dockerd must restart: dockerd cannot
reload TLS (moby#23936), so any change under server/ means a restart with
reason ``tls_rotation``. The renewal rule itself (2/3 of the lifetime,
bounded jitter) lives in lifetime.py and is re-exported here.

CA renewal and its overlap: at 2/3 of its life the CA certificate is
re-signed for the same key and name. The previous CA certificate moves to
ca/retired.pem and stays in every ca.pem (server and client) until it
expires, so during the overlap both are trusted: a client holding an old
ca.pem verifies new leaves, and dockerd accepts client certificates issued
under either. Leaves issued after the renewal are signed by the new CA
certificate and never outlive it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from supervisor.tls.lifetime import check_aware, renewal_time
from supervisor.tls.model import CertChange, CertReport, CertSpec
from supervisor.tls.san import SanSet

__all__ = ["RotationResult", "next_rotation", "renewal_time", "retry_delay", "rotate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RotationResult:
    """What a rotation changed; ``restart_dockerd`` when server/ files changed."""

    report: CertReport
    changes: tuple[CertChange, ...]
    restart_dockerd: bool
    next_at: datetime | None

    @property
    def rotated(self) -> tuple[str, ...]:
        """Names (ca, server, client) to count in dind_tls_rotations_total{cert}."""
        return tuple(change.cert for change in self.changes)


def next_rotation(report: CertReport, now: datetime) -> datetime | None:
    """When to call ``rotate`` next: the earliest renewal time, never before ``now``.

    None for a user-managed set: the agent cannot renew it (it warns instead,
    from the report's days left).
    """
    check_aware(now)
    if report.user_managed:
        return None
    times = [c.renew_at for c in report.certs if c.renew_at is not None]
    if not times:
        return None
    return max(min(times), now)


def retry_delay(
    failures: int,
    *,
    base: timedelta = timedelta(minutes=1),
    cap: timedelta = timedelta(hours=1),
) -> timedelta:
    """Back-off before retrying a failed rotation (1, 2, 4 ... minutes, at most an hour).

    Short enough that a freed disk or a remounted folder is picked up long
    before a leaf renewed at 2/3 of its life can expire.
    """
    if failures < 1:
        return timedelta(0)
    return min(base * (1 << min(failures - 1, 30)), cap)


def rotate(
    certdir: Path, spec: CertSpec, sans: SanSet, now: datetime, *, force: bool = False
) -> RotationResult:
    """Renew what is due (``force``: the server and client certificates now). Blocking.

    On failure raises CertificateError with nothing destroyed; the agent keeps
    dockerd running on the certificates it loaded, counts the failure and
    retries after ``retry_delay``.
    """
    # Here, not at the top: the agent imports this module for the schedule alone, and
    # certs.py loads cryptography (~9 MB resident, ~40 ms), which only the worker needs.
    from supervisor.tls.certs import converge

    report = converge(certdir, spec, sans, now, force_leaves=force)
    return RotationResult(
        report=report,
        changes=report.changes,
        restart_dockerd=report.server_changed,
        next_at=next_rotation(report, now),
    )
