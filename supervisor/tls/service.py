"""The TLS component of the agent: the certificate set while dockerd runs.

The set was made ready before dockerd's spawn by the launch stage (from the
manifest when nothing changed, else issued). This part then:

- checks the whole set with cryptography beside the running dockerd, when
  the launch trusted the manifest (in a worker process: the agent itself
  never loads cryptography, see ``worker.py``);
- renews what is due: it sleeps until the next renewal time, then waits for
  a quiet moment (no client connection carrying data for
  ``tls.rotation_idle``, up to a deadline well before expiry), renews, and
  asks the lifecycle for a ``tls_rotation`` restart when dockerd's own files
  changed (dockerd cannot reload TLS). A failed renewal keeps dockerd on the
  current certificates, is counted, and retried with backoff;
- notices server files changed behind its back (``certs rotate`` from a
  shell, a renewed user-managed set, another agent sharing the certdir) by a
  fingerprint of server/ as dockerd loaded it, and restarts dockerd so it
  never serves a certificate that is no longer on disk.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskStatus

from supervisor.config import Config
from supervisor.errors import CertificateError
from supervisor.findings import Severity
from supervisor.logs import get_logger
from supervisor.metrics import Metrics
from supervisor.netdiag import ClientActivity, read_client_activity
from supervisor.tls import rotation, worker
from supervisor.tls.files import TlsFiles
from supervisor.tls.manifest import Manifest
from supervisor.tls.model import CertReport, CertSpec, CertStatus
from supervisor.tls.san import SanSet
from supervisor.tls.settings import spec_from_config, utcnow

# Findings (a user-managed set nearing expiry) are logged at most this often.
_FINDINGS_LOG_INTERVAL = dt.timedelta(days=1)

Work = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
# Seconds since a client connection last carried data (None: no client connection).
# dockerd's TCP clients now, given the idle threshold (netdiag.ClientActivity).
QuietProbe = Callable[[float], Awaitable[ClientActivity]]


def clients_probe(ports: Callable[[], Collection[int]]) -> QuietProbe:
    """The probe of dockerd's TCP clients on ``ports()`` (its listeners), in a worker thread.
    Unix-socket clients cannot be seen: the kernel keeps no activity times for them."""

    async def probe(idle: float) -> ClientActivity:
        return await anyio.to_thread.run_sync(lambda: read_client_activity(ports(), idle))

    return probe


def retry_base(spec: CertSpec) -> dt.timedelta:
    """First back-off step after a failed renewal: a minute, shorter for short leaves.

    A leaf renewed at 2/3 of its life has 1/3 left; with a fixed minute, a
    leaf of seconds would expire before the first retry. A twentieth of the
    shortest lifetime leaves room for several retries, never below a second.
    """
    return max(dt.timedelta(seconds=1), min(dt.timedelta(minutes=1), spec.shortest_lifetime / 20))


def recheck_interval(spec: CertSpec) -> dt.timedelta:
    """Longest sleep between looks at the certdir, whatever the renewal schedule.

    Five minutes bounds how long dockerd serves files replaced by someone
    else; short lifetimes (tests, demos) look more often, never below 1 s.
    """
    return max(dt.timedelta(seconds=1), min(dt.timedelta(minutes=5), spec.shortest_lifetime / 20))


def server_fingerprint(certdir: Path) -> bytes:
    """A digest of server/{ca,cert,key}.pem: what dockerd loads. Blocking (small files)."""
    digest = hashlib.sha256()
    for name in ("ca.pem", "cert.pem", "key.pem"):
        try:
            data = (certdir / "server" / name).read_bytes()
        except OSError:
            data = b"\0missing"
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.digest()


def quiet_deadline(status: CertStatus, now: dt.datetime, max_wait: dt.timedelta) -> dt.datetime:
    """How long a due rotation may wait for quiet: half of what is left, at most ``max_wait``.

    The other half stays for retries should the renewal fail.
    """
    left = status.not_after - max(now, status.renew_at or now)
    return now + min(max_wait, max(dt.timedelta(0), left / 2))


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsView:
    """What the other parts need: dockerd's files and the client's."""

    server: TlsFiles
    client: TlsFiles


class TlsService:
    """Owns the certdir for the agent's lifetime (``run``)."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        *,
        sans: SanSet,
        request_restart: Callable[[], None],
        report: CertReport | None = None,
        manifest: Manifest | None = None,
        quiet: QuietProbe | None = None,
        work: Work = worker.run_subprocess,
        now: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.certdir = Path(config.tls.certdir)
        self.spec = spec_from_config(config)
        self.enabled_rotation = config.tls.rotate
        self.idle = config.tls.rotation_idle
        self.max_wait = dt.timedelta(seconds=config.tls.rotation_max_wait)
        self.sans = sans
        self._metrics = metrics
        self._request_restart = request_restart
        self._work = work
        self._quiet = quiet
        self._now = now
        self._log = get_logger(component="tls")
        self.report = report
        self._manifest = manifest  # the launch trusted it: the full check is still owed
        self.failures = 0
        self.next_at: dt.datetime | None = None
        self.pending_since: dt.datetime | None = None
        # server/ as the running dockerd loaded it (None: not known yet).
        self._loaded: bytes | None = None
        self._findings_logged_at: dt.datetime | None = None

    @property
    def view(self) -> TlsView:
        return TlsView(server=TlsFiles.of(self.certdir, "server"),
                       client=TlsFiles.of(self.certdir, "client"))

    @property
    def files(self) -> TlsFiles:
        return self.view.server

    async def before_spawn(self) -> None:
        """Remember server/ as the dockerd about to start will load it."""
        self._loaded = await anyio.to_thread.run_sync(server_fingerprint, self.certdir)

    async def run(self, *, task_status: TaskStatus[TlsView] = anyio.TASK_STATUS_IGNORED) -> None:
        """Check the set fully (if the launch trusted its record), then renew when due."""
        if self._loaded is None:
            self._loaded = await anyio.to_thread.run_sync(server_fingerprint, self.certdir)
        if self.report is not None:
            self._publish(self.report)
        elif self._manifest is not None:
            self._publish_manifest(self._manifest)
        task_status.started(self.view)
        if self.report is None:
            await self.renew(action=worker.ENSURE)
        if not self.enabled_rotation:
            return
        while True:
            await self._sleep_until_due()
            if await self._due_now():
                await self._wait_for_quiet()
            await self.renew(action=worker.ROTATE)

    async def _sleep_until_due(self) -> None:
        now = self._now()
        due = rotation.next_rotation(self.report, now) if self.report else None
        if self.failures:
            due = wake = now + self._retry_delay()
        else:
            # Also look between renewals, for files replaced by someone else.
            wake = now + recheck_interval(self.spec)
            if due is not None:
                wake = min(wake, due)
        self.next_at = due
        await anyio.sleep(max(0.0, (wake - now).total_seconds()))

    async def _due_now(self) -> bool:
        if self.report is None:
            return False
        now = self._now()
        return any(c.renew_at is not None and c.renew_at <= now for c in self.report.certs)

    async def _wait_for_quiet(self) -> None:
        """Within the renewal window, restart dockerd when no client is in the middle of work."""
        if self._quiet is None or self.report is None:
            return
        server = self.report.cert("server")
        now = self._now()
        if server is None or server.renew_at is None or server.renew_at > now:
            return  # the CA or client only: dockerd keeps running, nobody is cut
        deadline = quiet_deadline(server, now, self.max_wait)
        self.pending_since = now
        self._metrics.tls_rotation_pending.set(1)
        started = anyio.current_time()
        clients = ClientActivity(quiet_seconds=None, busy=0)
        try:
            while self._now() < deadline:
                clients = await self._quiet(self.idle)
                if not clients.visible:
                    self._log.warning(
                        "certificate_rotation_quiet_unknown",
                        message="the kernel does not report TCP activity here (no inet_diag):"
                        " renewing without waiting for quiet",
                    )
                    break
                if clients.quiet_seconds is None or clients.quiet_seconds >= self.idle:
                    break
                await anyio.sleep(min(1.0, max(0.05, self.idle - clients.quiet_seconds)))
            else:
                # The restart cuts what is still in flight: counted apart.
                self._metrics.tls_rotation_cut.inc(clients.busy)
                self._log.warning(
                    "certificate_rotation_not_quiet", deadline=deadline.isoformat(),
                    busy_connections=clients.busy,
                    message="clients kept dockerd busy until the deadline; renewing now, the"
                    " calls in flight are cut",
                )
        finally:
            waited = anyio.current_time() - started
            self._metrics.tls_rotation_pending.set(0)
            self._metrics.tls_rotation_wait.observe(waited)
            self.pending_since = None

    async def renew(self, *, action: str = worker.ROTATE, force: bool = False) -> bool:
        """One check or renewal attempt in the worker; True when something was renewed."""
        request = worker.request(action, self.certdir, self.spec, self.sans, self._now(),
                                 force=force)
        try:
            report, restart = worker.answer(await self._work(request))
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
        on_disk = await anyio.to_thread.run_sync(server_fingerprint, self.certdir)
        self.failures = 0
        self._publish(report)
        for change in report.changes:
            if change.old_serial is not None:  # a renewal; a first issue is no rotation
                self._metrics.tls_rotations.labels(cert=change.cert).inc()
        if report.changes:
            self._log.info(
                "certificates_rotated",
                certs=[
                    {"cert": c.cert, "reason": c.reason, "old_serial": c.old_serial,
                     "new_serial": c.new_serial}
                    for c in report.changes
                ],
                restart_dockerd=restart,
            )
        outside = not restart and self._loaded not in (None, on_disk)
        if outside:
            self._log.warning(
                "server_certificates_changed",
                certdir=str(self.certdir),
                message="server/ no longer holds what dockerd loaded (certs rotate, a renewed"
                " user-managed set, or another agent); restarting dockerd to load it",
            )
        if restart or outside:
            self._loaded = on_disk
            self._request_restart()
        return bool(report.changes)

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

    def _publish_manifest(self, record: Manifest) -> None:
        for name, times in record.certs.items():
            self._metrics.tls_not_after.labels(cert=name).set(times.not_after.timestamp())
            self._metrics.tls_not_before.labels(cert=name).set(times.not_before.timestamp())

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
            "rotation_pending_since": self.pending_since.isoformat() if self.pending_since
            else None,
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
