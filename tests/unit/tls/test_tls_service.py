"""The agent-facing TLS service: spec from configuration, retry pacing, one renewal attempt."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import anyio
import pytest
from tls_helpers import NOW, SANS

from supervisor.config import Config, TlsConfig
from supervisor.errors import CertificateError
from supervisor.metrics import Metrics
from supervisor.tls import certs, rotation
from supervisor.tls.service import TlsService, recheck_interval, retry_base, spec_from_config

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


def test_failed_renewal_is_counted_and_paced_then_succeeds(
    certdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed renewal counts, keeps the certs, backs off; the next attempt renews and restarts."""
    config = Config(tls=TlsConfig(certdir=str(certdir), server_lifetime=15.0))
    metrics = Metrics()
    restarts: list[bool] = []
    clock = [NOW]
    service = TlsService(config, metrics, request_restart=lambda: restarts.append(True),
                         now=lambda: clock[0])
    service.sans = SANS
    real_rotate = rotation.rotate

    def refuse(*args: object, **kwargs: object) -> rotation.RotationResult:
        raise CertificateError("cannot write /certs/server/cert.pem", path="/certs/server")

    async def scenario() -> tuple[bool, dt.timedelta, bool]:
        await service.ensure()
        clock[0] = NOW + dt.timedelta(seconds=14)
        monkeypatch.setattr(rotation, "rotate", refuse)
        failed = await service.rotate_once()
        delay = service._retry_delay()
        monkeypatch.setattr(rotation, "rotate", real_rotate)
        return failed, delay, await service.rotate_once()

    failed, delay, renewed = anyio.run(scenario)
    assert (failed, renewed) == (False, True)
    assert delay == dt.timedelta(seconds=1)
    assert metrics.registry.get_sample_value("dind_tls_rotation_failures_total") == 1
    assert metrics.registry.get_sample_value("dind_tls_rotations_total", {"cert": "server"}) == 1
    assert service.failures == 0
    assert restarts == [True]


def test_server_files_replaced_by_someone_else_restart_dockerd(certdir: Path) -> None:
    """`certs rotate` from a shell (no renewal due for the agent) still restarts dockerd once."""
    config = Config(tls=TlsConfig(certdir=str(certdir)))
    restarts: list[bool] = []
    service = TlsService(config, Metrics(), request_restart=lambda: restarts.append(True),
                         now=lambda: NOW)
    service.sans = SANS

    async def scenario() -> list[bool]:
        await service.ensure()
        await service.rotate_once()  # nothing due, nothing changed: no restart
        quiet = list(restarts)
        rotation.rotate(certdir, service.spec, SANS, NOW, force=True)  # the command line
        await service.rotate_once()
        await service.rotate_once()  # dockerd was restarted on the new files: once only
        return quiet

    assert anyio.run(scenario) == []
    assert restarts == [True]


def test_recheck_interval_bounds_how_long_replaced_files_go_unnoticed() -> None:
    """At most 5 minutes between looks at the certdir; short lifetimes look more often."""
    assert recheck_interval(spec_from_config(Config())) == dt.timedelta(minutes=5)
    short = spec_from_config(Config(tls=TlsConfig(server_lifetime=60.0)))
    assert recheck_interval(short) == dt.timedelta(seconds=3)
