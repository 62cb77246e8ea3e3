"""Tests for supervisor.doctor: `check` never ends in a bare traceback, whatever it meets."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor import cli, doctor
from supervisor.config import Config, load
from supervisor.findings import Finding, Severity

pytestmark = pytest.mark.unit


def test_a_check_that_breaks_is_one_error_finding_and_the_others_still_run() -> None:
    """A bug in one topic becomes an error naming it and the exception; the next topic runs."""

    def check_broken(config: Config) -> list[Finding]:
        raise FileNotFoundError(2, "No such file or directory", "/proc/self/limits")

    def check_fine(config: Config) -> list[Finding]:
        return [Finding(topic="fine", severity=Severity.OK, message="fine")]

    found = doctor.gather(load(env={}), [check_broken, check_fine])
    assert [f.topic for f in found] == ["broken", "fine"]
    assert found[0].severity is Severity.ERROR
    assert "FileNotFoundError" in found[0].message
    assert "/proc/self/limits" in found[0].message


def test_foreign_proc_is_told_with_the_remedy(tmp_path: Path) -> None:
    """A /proc without 'self' (nsenter -m without -p): a warning saying how to enter instead."""
    (tmp_path / "1").mkdir()
    finding = doctor.foreign_proc(str(tmp_path))
    assert finding is not None
    assert finding.severity is Severity.WARNING
    assert "nsenter -t PID -m -n -p" in (finding.remedy or "")
    (tmp_path / "self").symlink_to("1")
    assert doctor.foreign_proc(str(tmp_path)) is None


def test_unexpected_exception_in_a_command_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` hitting a bug exits 1 with what failed and a remedy, no traceback by default."""

    def broken(config: Config, **kwargs: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(doctor, "run_check", broken)
    monkeypatch.delenv("DIND_SUPERVISOR_LOG_LEVEL", raising=False)
    assert cli.main(["check"]) == 1
    err = capsys.readouterr().err
    assert "`check` failed unexpectedly: RuntimeError: boom" in err
    assert "please report it" in err
    assert "Traceback" not in err
    monkeypatch.setenv("DIND_SUPERVISOR_LOG_LEVEL", "debug")
    assert cli.main(["check"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_check_reports_daemon_json_as_run_would_refuse_it(tmp_path: Path) -> None:
    """`check` finds the same clash the launch refuses: daemon.json's hosts, with its remedy."""
    path = tmp_path / "daemon.json"
    path.write_text('{"hosts": ["tcp://0.0.0.0:2375"]}')
    config = load(env={"DIND_SUPERVISOR_DOCKERD_BINARY": str(tmp_path / "no-dockerd")},
                  dockerd_args=["--config-file", str(path)])
    (finding,) = doctor.check_daemon_json(config)
    assert finding.severity is Severity.ERROR
    assert "hosts" in finding.message
    assert finding.remedy is not None
    assert "remove `hosts`" in finding.remedy
    path.write_text('{"debug": true}')
    (ok,) = doctor.check_daemon_json(config)
    assert ok.severity is Severity.OK
