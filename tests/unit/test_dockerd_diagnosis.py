"""Tests for supervisor.dockerd.diagnosis: which line explains a dockerd's end, against the real
lines of dockerd 20.10 and 26.1 (tests/unit/fixtures/dockerd_lines/)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from supervisor.dockerd.diagnosis import Diagnosis, Failure, quote
from supervisor.logs import parse_dockerd_line

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures" / "dockerd_lines"
VERSIONS = ("20.10", "26.1")


def blocks(version: str) -> dict[str, tuple[str, list[str]]]:
    """scenario -> (category, its raw lines in the captured order)."""
    found: dict[str, tuple[str, list[str]]] = {}
    current = ""
    for raw in (FIXTURES / f"{version}.txt").read_text().splitlines():
        header = re.match(r"# scenario: (\S+) category=(\S+)", raw)
        if header:
            current = header[1]
            found[current] = (header[2], [])
        elif raw.strip() and not raw.startswith("#") and current:
            found[current][1].append(raw)
    return found


def diagnose(*lines: str, ready_after: int | None = None, disk_full_at: str | None = None
             ) -> Failure | None:
    diagnosis = Diagnosis()
    for index, line in enumerate(lines):
        if ready_after is not None and index == ready_after:
            diagnosis.ready()
        diagnosis.add(parse_dockerd_line(line), line)
    if ready_after is not None and ready_after >= len(lines):
        diagnosis.ready()
    return diagnosis.failure(disk_full_at=disk_full_at)


CASES = [(v, name, category, lines) for v in VERSIONS
         for name, (category, lines) in blocks(v).items() if lines]


@pytest.mark.parametrize(("version", "scenario", "category", "lines"), CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_each_captured_failure_is_explained_in_its_category(
    version: str, scenario: str, category: str, lines: list[str]
) -> None:
    """A failed start's lines give one failure of the scenario's category, quoting a real line;
    only configuration refusals are permanent. Handshakes are never dockerd's failure."""
    failure = diagnose(*lines)
    if category in ("none", "client_handshake"):
        assert failure is None
        return
    assert failure is not None
    assert failure.category == category, failure
    assert failure.cause
    assert failure.remedy
    quoted = [quote(parse_dockerd_line(line), line) for line in lines]
    assert any(failure.line.split("\n")[0] == line for line in quoted), failure.line
    assert failure.permanent is (category == "config")


@pytest.mark.parametrize("version", VERSIONS)
def test_full_disk_names_the_write_that_failed_not_containerd(version: str) -> None:
    """containerd's "not implemented" is dockerd's last word; the no-space line explains it."""
    _category, lines = blocks(version)["disk_full"]
    failure = diagnose(*lines)
    assert failure is not None
    assert "no space left on device" in failure.line
    assert "the disk is full" in (failure.cause or "")
    assert failure.final_line is not None
    assert "failed to dial" in failure.final_line


@pytest.mark.parametrize("version", VERSIONS)
def test_unknown_storage_driver_is_named(version: str) -> None:
    """'driver not supported' says little; the GetDriver line names the driver."""
    _category, lines = blocks(version)["storage_unknown"]
    failure = diagnose(*lines)
    assert failure is not None
    assert failure.explanation is not None
    assert failure.explanation.rule == "storage_driver_unknown"
    assert "bogus" in (failure.cause or "")


def test_iptables_message_keeps_its_second_line() -> None:
    """'(exit status 4)' on its own line is part of the message quoted."""
    _category, lines = blocks("20.10")["iptables_denied"]
    failure = diagnose(*lines)
    assert failure is not None
    assert failure.line.endswith("(exit status 4)")
    assert failure.category == "network"


def test_unknown_error_line_is_quoted_verbatim() -> None:
    """A line the table does not know is still the cause, as printed, with no invented cause."""
    failure = diagnose("time=\"x\" level=info msg=\"Starting up\"",
                       "failed to frobnicate the widget: the widget is gone")
    assert failure == Failure(line="failed to frobnicate the widget: the widget is gone",
                              explanation=None)
    assert failure.cause is None
    assert failure.category == "unknown"
    assert failure.sentence() == '"failed to frobnicate the widget: the widget is gone"'


def test_specific_fatal_line_beats_later_generic_one() -> None:
    """The pid-file line is the cause even when a generic line follows it."""
    failure = diagnose(
        "failed to start daemon: pid file found, ensure docker is not running or delete"
        " /var/run/docker.pid",
        "failed to start daemon: something generic",
    )
    assert failure is not None
    assert failure.category == "state"


def test_handshake_lines_are_never_the_failure() -> None:
    """A probe's EOF and a wrong client CA, before dockerd dies of something unexplained."""
    eof = "2026-12-01 13:50:49.382723 I | http: TLS handshake error from 127.0.0.1:5: EOF"
    ca = ("2026-12-01 13:50:49.417797 I | http: TLS handshake error from 127.0.0.1:6: tls:"
          " failed to verify client certificate: x509: certificate signed by unknown authority")
    assert diagnose(eof, ca) is None
    assert diagnose(eof, ready_after=0) is None
    assert diagnose("Daemon has completed initialization", eof, ca, ready_after=1) is None


def test_runc_errors_of_containers_are_not_dockerds() -> None:
    """'error setting rlimit' belongs to a container; dockerd lives on."""
    line = ('time="t" level=error msg="Handler for POST /v1.41/containers/abc/start returned'
            ' error: failed to create shim task: OCI runtime create failed: runc create failed:'
            ' unable to start container process: error during container init: error setting'
            ' rlimits for ready process: error setting rlimit type 7: operation not permitted:'
            ' unknown"')
    assert diagnose(line) is None


def test_after_ready_only_fatal_lines_count() -> None:
    """Warnings of a good start and a container's error explain no later kill -9; a panic does."""
    start_noise = 'time="t" level=error msg="failed to mount overlay: no such device"'
    container_error = 'time="t" level=error msg="Error response from daemon: no such image"'
    assert diagnose(start_noise, container_error, ready_after=1) is None
    panic = "panic: runtime error: invalid memory address or nil pointer dereference"
    failure = diagnose(start_noise, container_error, panic, ready_after=1)
    assert failure is not None
    assert failure.line == panic
    assert "crashed" in (failure.cause or "")
    fatal = 'time="t" level=fatal msg="something unexpected"'
    failure = diagnose(fatal, ready_after=0)
    assert failure is not None
    assert failure.line == "something unexpected"


def test_full_disk_seen_by_statvfs_explains_containerd_timeout() -> None:
    """No 'no space' line at all, but statvfs shows the data root full: the disk is named."""
    failure = diagnose("failed to start containerd: timeout waiting for containerd to start",
                       disk_full_at="/var/lib/docker: 0 B and 3 inodes free of 1.0 MiB and 64")
    assert failure is not None
    assert failure.category == "disk"
    assert "full" in (failure.cause or "")
    assert "/var/lib/docker" in (failure.cause or "")
    assert failure.line == "failed to start containerd: timeout waiting for containerd to start"
    # ...but never over a specific cause, nor out of nothing once dockerd served.
    specific = diagnose("unable to configure the Docker daemon with file /etc/docker/daemon.json:"
                        " EOF", disk_full_at="/x: 0 B")
    assert specific is not None
    assert specific.category == "config"
    nothing = diagnose(disk_full_at="/x: 0 B")
    assert nothing is not None
    assert nothing.line == "(dockerd printed no error line)"
