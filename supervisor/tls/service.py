"""The TLS component of the agent: certificates at start, rotation while running.

At start it issues or verifies the certdir (in a thread: key generation and
file hashing would block the loop) and gives dockerd the server files. Then
it sleeps until the next renewal is due, renews, and asks the lifecycle for
a ``tls_rotation`` restart when dockerd's own files changed (dockerd cannot
reload TLS). A failed renewal keeps dockerd on the current certificates,
is counted, and retried with backoff.

It also notices server files that changed behind its back (``certs rotate``
from a shell, a renewed user-managed set, another agent sharing the
certdir): it remembers a fingerprint of server/ as dockerd loaded it and
looks again at least every few minutes; a difference restarts dockerd, so
dockerd never keeps serving a certificate that is no longer on disk until
it expires.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from supervisor.config import Config, TlsConfig
from supervisor.dockerd.process import TlsFiles
from supervisor.errors import CertificateError
from supervisor.findings import Severity
from supervisor.logs import get_logger
from supervisor.metrics import Metrics
from supervisor.tls import certs, rotation
from supervisor.tls.issue import parse_key_type
from supervisor.tls.model import CertReport, CertSpec
from supervisor.tls.san import SanSet, default_sans, parse_tls_san, system_hostnames

# Findings (a user-managed set nearing expiry) are logged at most this often.
_FINDINGS_LOG_INTERVAL = dt.timedelta(days=1)


def spec_from_config(config: Config) -> CertSpec:
    tls = config.tls
    source = config.sources.get("tls.key_type", "default")
    return CertSpec(
        key_type=parse_key_type(tls.key_type, key="tls.key_type", source=source),
        ca_lifetime=dt.timedelta(seconds=tls.ca_lifetime),
        server_lifetime=dt.timedelta(seconds=tls.server_lifetime),
        client_lifetime=dt.timedelta(seconds=tls.client_lifetime),
        renew_fraction=tls.renew_fraction,
        client_key_mode=int(tls.client_key_mode, 8),
        expiry_warning=dt.timedelta(seconds=tls.expiry_warning),
        # Lifetimes of seconds (tests, demos) cannot afford a minute of backdating.
        # Every lifetime counts: a 12 s client certificate backdated by a minute
        # would be issued already due and renewed in a tight loop.
        backdate=dt.timedelta(seconds=min(60.0, _shortest_lifetime(tls) / 100)),
    )


def _shortest_lifetime(tls: TlsConfig) -> float:
    return min(tls.ca_lifetime, tls.server_lifetime, tls.client_lifetime)


def retry_base(spec: CertSpec) -> dt.timedelta:
    """First back-off step after a failed renewal: a minute, shorter for short leaves.

    A leaf renewed at 2/3 of its life has 1/3 left; with a fixed minute, a
    leaf of seconds would expire before the first retry. A twentieth of the
    shortest lifetime leaves room for several retries, never below a second.
    """
    shortest = min(spec.ca_lifetime, spec.server_lifetime, spec.client_lifetime)
    return max(dt.timedelta(seconds=1), min(dt.timedelta(minutes=1), shortest / 20))


def recheck_interval(spec: CertSpec) -> dt.timedelta:
    """Longest sleep between looks at the certdir, whatever the renewal schedule.

    Five minutes bounds how long dockerd serves files replaced by someone
    else; short lifetimes (tests, demos) look more often, never below 1 s.
    """
    shortest = min(spec.ca_lifetime, spec.server_lifetime, spec.client_lifetime)
    return max(dt.timedelta(seconds=1), min(dt.timedelta(minutes=5), shortest / 20))


def server_fingerprint(certdir: Path) -> bytes:
    """A digest of server/{ca,cert,key}.pem: what dockerd loads. Blocking."""
    digest = hashlib.sha256()
    for name in ("ca.pem", "cert.pem", "key.pem"):
        try:
            data = (certdir / "server" / name).read_bytes()
        except OSError:
            data = b"\0missing"
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.digest()


def sans_from_config(config: Config, proc_root: Path = Path("/proc")) -> SanSet:
    source = config.sources.get("tls.san", "environment DOCKER_TLS_SAN")
    extra = parse_tls_san(config.tls.san, source=source, key="DOCKER_TLS_SAN")
    return default_sans(hostnames=system_hostnames(), proc_root=proc_root, extra=extra)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class TlsService:
    """Owns the certdir for the agent's lifetime."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        *,
        request_restart: Callable[[], None],
        now: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.certdir = Path(config.tls.certdir)
        self.spec = spec_from_config(config)
        self.enabled_rotation = config.tls.rotate
        self._config = config
        self._metrics = metrics
        self._request_restart = request_restart
        self._now = now
        self._log = get_logger(component="tls")
        self.report: CertReport | None = None
        self.failures = 0
        self.next_at: dt.datetime | None = None
        # Computed once: SANs must match exactly, and docker0 appearing later
        # must not trigger a reissue.
        self.sans: SanSet | None = None
        # server/ as the running dockerd loaded it (None: not known yet).
        self._loaded: bytes | None = None
        self._findings_logged_at: dt.datetime | None = None

    @property
    def files(self) -> TlsFiles:
        server = self.certdir / "server"
        return TlsFiles(ca=server / "ca.pem", cert=server / "cert.pem", key=server / "key.pem")

    async def ensure(self) -> CertReport:
        """Issue what is missing or due; raises CertificateError (exit 2) on bad files."""
        if self.sans is None:
            self.sans = sans_from_config(self._config)
        started = anyio.current_time()
        report = await anyio.to_thread.run_sync(
            certs.ensure, self.certdir, self.spec, self.sans, self._now()
        )
        self._loaded = await anyio.to_thread.run_sync(server_fingerprint, self.certdir)
        self._publish(report)
        self._log.info(
            "certificates_ready",
            certdir=str(self.certdir),
            user_managed=report.user_managed,
            issued=[c.cert for c in report.changes],
            seconds=round(anyio.current_time() - started, 3),
        )
        return report

    async def before_spawn(self) -> None:
        """Remember server/ as the dockerd about to start will load it."""
        self._loaded = await anyio.to_thread.run_sync(server_fingerprint, self.certdir)

    def _publish(self, report: CertReport) -> None:
        self.report = report
        for status in report.certs:
            self._metrics.tls_not_after.labels(cert=status.name).set(status.not_after.timestamp())
            self._metrics.tls_not_before.labels(cert=status.name).set(
                status.not_before.timestamp()
            )
        now = self._now()
        last = self._findings_logged_at
        if last is not None and now - last < _FINDINGS_LOG_INTERVAL:
            return
        if report.findings:
            self._findings_logged_at = now
        for finding in report.findings:
            level = "warning" if finding.severity >= Severity.WARNING else "info"
            getattr(self._log, level)(
                "certificate_finding", message=finding.message, remedy=finding.remedy
            )

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Renew certificates when due, until cancelled."""
        task_status.started()
        if not self.enabled_rotation:
            return
        while True:
            if self.report is None:
                raise RuntimeError("TlsService.ensure() must run before run()")
            now = self._now()
            due = rotation.next_rotation(self.report, now)
            if self.failures:
                due = wake = now + self._retry_delay()
            else:
                # Also look between renewals, for files replaced by someone else.
                wake = now + recheck_interval(self.spec)
                if due is not None:
                    wake = min(wake, due)
            self.next_at = due
            await anyio.sleep(max(0.0, (wake - now).total_seconds()))
            await self.rotate_once()

    async def rotate_once(self, *, force: bool = False) -> bool:
        """One renewal attempt; True when something was renewed."""
        if self.sans is None:
            self.sans = sans_from_config(self._config)
        sans = self.sans

        def attempt() -> tuple[rotation.RotationResult, bytes]:
            result = rotation.rotate(self.certdir, self.spec, sans, self._now(), force=force)
            return result, server_fingerprint(self.certdir)

        try:
            result, on_disk = await anyio.to_thread.run_sync(attempt)
        except CertificateError as exc:
            self.failures += 1
            self._metrics.tls_rotation_failures.inc()
            self._log.error(
                "certificate_rotation_failed",
                error=exc.message,
                remedy=exc.remedy,
                path=exc.path,
                failures=self.failures,
                retry_in_seconds=self._retry_delay().total_seconds(),
            )
            return False
        self.failures = 0
        self._publish(result.report)
        for name in result.rotated:
            self._metrics.tls_rotations.labels(cert=name).inc()
        if result.changes:
            self._log.info(
                "certificates_rotated",
                certs=[
                    {"cert": c.cert, "reason": c.reason, "old_serial": c.old_serial,
                     "new_serial": c.new_serial}
                    for c in result.changes
                ],
                restart_dockerd=result.restart_dockerd,
            )
        outside = not result.restart_dockerd and self._loaded not in (None, on_disk)
        if outside:
            self._log.warning(
                "server_certificates_changed",
                certdir=str(self.certdir),
                message="server/ no longer holds what dockerd loaded (certs rotate, a renewed"
                " user-managed set, or another agent); restarting dockerd to load it",
            )
        if result.restart_dockerd or outside:
            self._loaded = on_disk
            self._request_restart()
        return bool(result.changes)

    def _retry_delay(self) -> dt.timedelta:
        return rotation.retry_delay(self.failures, base=retry_base(self.spec))

    def status(self) -> dict[str, Any]:
        now = self._now()
        report = self.report
        return {
            "enabled": True,
            "certdir": str(self.certdir),
            "user_managed": report.user_managed if report else None,
            "next_rotation": self.next_at.isoformat() if self.next_at else None,
            "rotation_failures": self.failures,
            "certificates": [
                {
                    "name": c.name,
                    "path": c.path,
                    "serial": format(c.serial, "x"),
                    "not_before": c.not_before.isoformat(),
                    "not_after": c.not_after.isoformat(),
                    "days_left": round(c.days_left(now), 2),
                    "renew_at": c.renew_at.isoformat() if c.renew_at else None,
                }
                for c in (report.certs if report else ())
            ],
        }
