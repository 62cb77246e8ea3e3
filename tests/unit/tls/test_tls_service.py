"""The agent-facing TLS service: spec from configuration, retry pacing, one renewal attempt."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import anyio
import pytest
from tls_helpers import NOW, SANS

from supervisor.config import Config, TlsConfig
from supervisor.metrics import Metrics
from supervisor.netdiag import ClientActivity
from supervisor.tls import certs, rotation, worker
from supervisor.tls.model import CertStatus
from supervisor.tls.service import TlsService, quiet_deadline, recheck_interval, retry_base
from supervisor.tls.settings import spec_from_config

pytestmark = pytest.mark.unit


def test_short_client_lifetime_is_not_issued_already_due(certdir: Path) -> None:
    """A 12 s client certificate is not backdated past its renewal time (no renewal loop)."""
    spec = spec_from_config(Config(tls=TlsConfig(certdir=str(certdir), client_lifetime=12.0)))
    report = certs.ensure(certdir, spec, SANS, NOW)
    due = rotation.next_rotation(report, NOW)
    assert due is not None
    assert due >= NOW + dt.timedelta(seconds=6)


def test_backdate_stays_a_minute_for_long_lifetimes(certdir: Path) -> None:
    """Default lifetimes keep the full minute of backdating for slow client clocks."""
    assert spec_from_config(Config()).backdate == dt.timedelta(minutes=1)


@pytest.mark.parametrize(
    ("lifetime", "base"),
    [(30 * 86400.0, 60.0), (600.0, 30.0), (15.0, 1.0), (1.0, 1.0)],
)
def test_retry_base_scales_with_the_shortest_lifetime(lifetime: float, base: float) -> None:
    """A minute for day-long leaves; short leaves retry well before they expire (>= 1 s)."""
    spec = spec_from_config(Config(tls=TlsConfig(server_lifetime=lifetime)))
    assert retry_base(spec) == dt.timedelta(seconds=base)


async def in_process(request: dict[str, Any]) -> dict[str, Any]:
    """The worker's work without the worker process (the tests run cryptography directly)."""
    return worker.handle(request)


def test_failed_renewal_is_counted_and_paced_then_succeeds(certdir: Path) -> None:
    """A failed renewal counts, keeps the certs, backs off; the next attempt renews and restarts."""
    config = Config(tls=TlsConfig(certdir=str(certdir), server_lifetime=15.0))
    metrics = Metrics()
    restarts: list[bool] = []
    clock = [NOW]
    refusing = [False]

    async def work(request: dict[str, Any]) -> dict[str, Any]:
        if refusing[0]:
            return {"error": {"message": "cannot write /certs/server/cert.pem",
                              "path": "/certs/server", "remedy": None}}
        return worker.handle(request)

    service = TlsService(config, metrics, sans=SANS, request_restart=lambda: restarts.append(True),
                         now=lambda: clock[0], work=work)

    async def scenario() -> tuple[bool, dt.timedelta, bool]:
        await service.renew(action=worker.ENSURE)
        clock[0] = NOW + dt.timedelta(seconds=14)
        refusing[0] = True
        failed = await service.renew()
        delay = service._retry_delay()
        refusing[0] = False
        return failed, delay, await service.renew()

    failed, delay, renewed = anyio.run(scenario)
    assert (failed, renewed) == (False, True)
    assert delay == dt.timedelta(seconds=1)
    assert metrics.registry.get_sample_value("dind_tls_rotation_failures_total") == 1
    assert metrics.registry.get_sample_value("dind_tls_rotations_total", {"cert": "server"}) == 1
    assert service.failures == 0
    assert restarts == [True, True]  # the first issue wrote server/, then the renewal


def test_server_files_replaced_by_someone_else_restart_dockerd(certdir: Path) -> None:
    """`certs rotate` from a shell (no renewal due for the agent) still restarts dockerd once."""
    config = Config(tls=TlsConfig(certdir=str(certdir)))
    spec = spec_from_config(config)
    certs.ensure(certdir, spec, SANS, NOW)
    restarts: list[bool] = []
    service = TlsService(config, Metrics(), sans=SANS,
                         request_restart=lambda: restarts.append(True), now=lambda: NOW,
                         work=in_process)

    async def scenario() -> list[bool]:
        await service.before_spawn()  # what the running dockerd loaded
        await service.renew()  # nothing due, nothing changed: no restart
        quiet = list(restarts)
        rotation.rotate(certdir, service.spec, SANS, NOW, force=True)  # the command line
        await service.renew()
        await service.renew()  # dockerd was restarted on the new files: once only
        return quiet

    assert anyio.run(scenario) == []
    assert restarts == [True]


def test_due_server_renewal_waits_for_quiet_clients(certdir: Path) -> None:
    """A due server renewal waits while a client is busy, exports pending=1 meanwhile, and
    renews as soon as clients were quiet for rotation_idle; the wait is measured."""
    config = Config(tls=TlsConfig(certdir=str(certdir), rotation_idle=0.2))
    spec = spec_from_config(config)
    report = certs.ensure(certdir, spec, SANS, NOW)
    server = report.cert("server")
    assert server is not None
    assert server.renew_at is not None
    metrics = Metrics()
    answers = iter([0.0, 0.05, None])  # busy, busy, then no client connection at all
    seen_pending: list[float | None] = []

    async def quiet(idle: float) -> ClientActivity:
        assert idle == 0.2
        seen_pending.append(metrics.registry.get_sample_value("dind_tls_rotation_pending"))
        seconds = next(answers)
        return ClientActivity(quiet_seconds=seconds, busy=0 if seconds is None else 1)

    service = TlsService(config, metrics, sans=SANS, request_restart=lambda: None,
                         report=report, now=lambda: server.renew_at, quiet=quiet,  # type: ignore[arg-type,return-value]
                         work=in_process)
    anyio.run(service._wait_for_quiet)
    assert seen_pending == [1.0, 1.0, 1.0]
    assert metrics.registry.get_sample_value("dind_tls_rotation_pending") == 0
    assert metrics.registry.get_sample_value("dind_tls_rotation_wait_seconds_count") == 1


def test_quiet_wait_ends_at_its_deadline() -> None:
    """Half of what is left after the renewal time, at most rotation_max_wait."""
    status = CertStatus(name="server", path="server/cert.pem", serial=1, not_before=NOW,
                        not_after=NOW + dt.timedelta(days=30),
                        renew_at=NOW + dt.timedelta(days=20), key_type="ecdsa-p256")
    at = NOW + dt.timedelta(days=20)
    assert quiet_deadline(status, at, dt.timedelta(hours=6)) == at + dt.timedelta(hours=6)
    assert quiet_deadline(status, at, dt.timedelta(days=30)) == at + dt.timedelta(days=5)


def test_recheck_interval_bounds_how_long_replaced_files_go_unnoticed() -> None:
    """At most 5 minutes between looks at the certdir; short lifetimes look more often."""
    assert recheck_interval(spec_from_config(Config())) == dt.timedelta(minutes=5)
    short = spec_from_config(Config(tls=TlsConfig(server_lifetime=60.0)))
    assert recheck_interval(short) == dt.timedelta(seconds=3)
