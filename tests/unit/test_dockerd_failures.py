"""Tests for supervisor.dockerd.failures: the table against real lines of dockerd 20.10 and 26.1."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from supervisor.dockerd.failures import RULES, Category, explain, handshake_reason, is_continuation
from supervisor.logs import parse_dockerd_line

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures" / "dockerd_lines"
VERSIONS = ("20.10", "26.1")


@dataclass(frozen=True)
class Captured:
    version: str
    scenario: str
    category: str
    text: str  # one message; a continuation line is joined to the line before


def load(version: str) -> list[Captured]:
    """The fixture's messages, each with the scenario and category of its block."""
    captured: list[Captured] = []
    scenario = category = ""
    for raw in (FIXTURES / f"{version}.txt").read_text().splitlines():
        header = re.match(r"# scenario: (\S+) category=(\S+)", raw)
        if header:
            scenario, category = header[1], header[2]
            continue
        if not raw.strip() or raw.startswith("#"):
            continue
        if is_continuation(raw) and captured:
            last = captured.pop()
            captured.append(Captured(version, scenario, category, last.text + "\n" + raw))
            continue
        captured.append(Captured(version, scenario, category, raw))
    return captured


ALL = [c for version in VERSIONS for c in load(version)]


def test_fixtures_hold_every_scenario_of_both_versions() -> None:
    """Both captures are present and cover the failures the table must know."""
    for version in VERSIONS:
        scenarios = {c.scenario for c in load(version)}
        assert {"hosts_clash", "json_trailing_comma", "storage_unknown", "pidfile_live",
                "tls_missing_files", "port_busy", "iptables_denied", "disk_full",
                "containerd_stuck", "unknown_flag", "handshakes"} <= scenarios  # fmt: skip


@pytest.mark.parametrize("captured", ALL, ids=lambda c: f"{c.version}-{c.scenario}")
def test_every_captured_line_is_explained_in_its_category(captured: Captured) -> None:
    """Each real line gets the category its scenario calls for, with a cause and a remedy."""
    explanation = explain(captured.text)
    if captured.category == "none":
        assert explanation is None
        return
    assert explanation is not None, captured.text
    assert explanation.category == Category(captured.category), captured.text
    assert explanation.cause
    assert explanation.remedy


def by_scenario(version: str, scenario: str) -> list[str]:
    return [c.text for c in load(version) if c.scenario == scenario]


@pytest.mark.parametrize("version", VERSIONS)
def test_hosts_clash_names_key_path_and_remedy(version: str) -> None:
    """The clash names the key and the file, and tells how to pass listeners instead."""
    (line,) = by_scenario(version, "hosts_clash")
    explanation = explain(line)
    assert explanation is not None
    assert explanation.details == {"path": "/etc/docker/daemon.json", "keys": "hosts"}
    assert explanation.fatal
    assert "remove `hosts`" in explanation.remedy


@pytest.mark.parametrize("version", VERSIONS)
def test_several_clashing_keys_are_all_named(version: str) -> None:
    """tlscert and tlsverify given twice: both keys are in the cause."""
    (line,) = by_scenario(version, "tls_clash")
    explanation = explain(line)
    assert explanation is not None
    assert explanation.details["keys"] == "tlscert, tlsverify"


@pytest.mark.parametrize("version", VERSIONS)
def test_json_syntax_names_the_file(version: str) -> None:
    """A syntax error names the file it is in, also for --config-file."""
    (line,) = by_scenario(version, "json_other_file")
    explanation = explain(line)
    assert explanation is not None
    assert explanation.rule == "config_json_syntax"
    assert explanation.details["path"] == "/certs/my-daemon.json"


def test_wrong_type_names_the_key_in_both_go_field_paths() -> None:
    """'Config.debug' (20.10) and 'Config.CommonConfig.debug' (26.1) both give key debug."""
    for version in VERSIONS:
        (line,) = by_scenario(version, "json_wrong_type")
        explanation = explain(line)
        assert explanation is not None
        assert explanation.details["key"] == "debug"
        assert "bool" in explanation.cause


def test_unknown_keys_are_listed() -> None:
    """Unknown daemon.json keys are named in the cause."""
    (line,) = by_scenario("26.1", "unknown_key")
    explanation = explain(line)
    assert explanation is not None
    assert "storage-driverr" in explanation.cause
    assert "not-an-option" in explanation.cause


def test_pid_file_messages_of_both_versions() -> None:
    """20.10's 'pid file found' and 26.1's 'process with PID N is still running' both match."""
    old = explain(by_scenario("20.10", "pidfile_live")[0])
    new = explain(by_scenario("26.1", "pidfile_live")[0])
    assert old is not None
    assert new is not None
    assert old.details == {"path": "/var/run/docker.pid"}
    assert new.details == {"path": "/var/run/docker.pid", "pid": "1"}
    assert old.category is new.category is Category.STATE


def test_storage_driver_names_are_taken_when_given() -> None:
    """26.1 names the driver in 'driver not supported: bogus'; 20.10 does not."""
    new = explain(by_scenario("26.1", "storage_unknown")[0])
    old = explain(by_scenario("20.10", "storage_unknown")[0])
    assert new is not None
    assert old is not None
    assert new.details == {"driver": "bogus"}
    assert old.details == {}
    logrus = explain(by_scenario("20.10", "storage_unknown")[1])
    assert logrus is not None
    assert logrus.rule == "storage_driver_unknown"
    assert logrus.details == {"driver": "bogus"}


@pytest.mark.parametrize("version", VERSIONS)
def test_tls_missing_file_names_the_file(version: str) -> None:
    """'open /certs/server/cert.pem: no such file' says which file is missing."""
    explanation = explain(by_scenario(version, "tls_missing_files")[0])
    assert explanation is not None
    assert "/certs/server/cert.pem does not exist" in explanation.cause


@pytest.mark.parametrize("version", VERSIONS)
def test_iptables_permission_needs_net_admin(version: str) -> None:
    """The two-line iptables error (joined) says CAP_NET_ADMIN is missing."""
    explanation = explain(by_scenario(version, "iptables_denied")[0])
    assert explanation is not None
    assert explanation.rule == "iptables_nat_chain"
    assert explanation.details == {"chain": "DOCKER"}
    assert "CAP_NET_ADMIN" in explanation.remedy


@pytest.mark.parametrize("version", VERSIONS)
def test_missing_iptables_both_spellings(version: str) -> None:
    """'Iptables not found' (20.10) and 'iptables not found' (26.1) both say to install it."""
    explanation = explain(by_scenario(version, "iptables_missing")[0])
    assert explanation is not None
    assert "install iptables" in explanation.remedy


@pytest.mark.parametrize("version", VERSIONS)
def test_busy_port_names_the_address(version: str) -> None:
    """'bind: address already in use' gives the address."""
    explanation = explain(by_scenario(version, "port_busy")[0])
    assert explanation is not None
    assert explanation.details == {"address": "127.0.0.1:2376"}


@pytest.mark.parametrize("version", VERSIONS)
def test_full_disk_lines(version: str) -> None:
    """containerd's ENOSPC warnings name the file; the fatal line points at them."""
    lines = [explain(line) for line in by_scenario(version, "disk_full")]
    assert all(e is not None for e in lines)
    disk = [e for e in lines if e is not None and e.rule == "no_space"]
    assert len(disk) == 3
    assert disk[0].details["path"].endswith("meta.db")
    fatal = [e for e in lines if e is not None and e.fatal]
    assert fatal
    assert "no space left on device" in fatal[0].cause


@pytest.mark.parametrize("version", VERSIONS)
def test_containerd_timeout_mentions_disk_and_stuck(version: str) -> None:
    """'timeout waiting for containerd to start' says: full disk or stuck containerd."""
    explanation = explain(by_scenario(version, "containerd_stuck")[0])
    assert explanation is not None
    assert "full disk" in explanation.cause
    assert "stuck" in explanation.cause


def test_containerd_socket_path_is_kept_whole() -> None:
    """The dialing warning names the socket dockerd was told to use, with its leading slash."""
    (line,) = by_scenario("20.10", "containerd_bad_socket")
    explanation = explain(line)
    assert explanation is not None
    assert explanation.details == {"socket": "/run/no-such-containerd.sock"}
    assert not explanation.fatal


# Client handshakes ---------------------------------------------------------------------------


EXPECTED_REASONS = {
    "20.10": ["eof", "no_client_cert", "client_cert_rejected", "bad_record_mac", "unknown_ca",
              "bad_certificate", "not_tls", "unsupported_version", "bad_record_mac"],
    "26.1": ["eof", "plain_http", "no_client_cert", "client_cert_rejected", "bad_record_mac",
             "unknown_ca", "bad_certificate", "not_tls", "unsupported_version", "bad_record_mac"],
}  # fmt: skip


@pytest.mark.parametrize("version", VERSIONS)
def test_handshake_reasons_are_labelled(version: str) -> None:
    """Each client handshake failure gets its own label; none is dockerd's failure."""
    explanations = [explain(line) for line in by_scenario(version, "handshakes")]
    assert [e.reason if e else None for e in explanations] == EXPECTED_REASONS[version]
    for explanation in explanations:
        assert explanation is not None
        assert not explanation.fatal
        assert explanation.details["client"].startswith("127.0.0.1:")


def test_handshake_reason_other_and_network_errors() -> None:
    """Errors the table has no label for are 'other'; resets and timeouts have theirs."""
    assert (
        handshake_reason("read tcp 10.0.0.1:2376->10.0.0.5:1: read: connection reset by peer")[0]
        == "reset"
    )
    assert handshake_reason("read tcp 10.0.0.1:2376->10.0.0.5:1: i/o timeout")[0] == "timeout"
    assert handshake_reason("tls: something new")[0] == "other"


# Lines given as parsed objects, and lines that are not failures ---------------------------


def test_parsed_logrus_line_uses_its_error_field() -> None:
    """A DockerdLine's error= field is searched too (that is where containerd puts ENOSPC)."""
    line = parse_dockerd_line(
        'time="2024-01-01T00:00:00Z" level=warning msg="failed to load plugin x"'
        ' error="mkdir /var/lib/docker/x: no space left on device"'
    )
    explanation = explain(line)
    assert explanation is not None
    assert explanation.category is Category.DISK
    assert explanation.details == {"path": "/var/lib/docker/x"}


def test_runc_rlimit_is_recognised_only() -> None:
    """runc's rlimit error (line as seen on this machine, runc 1.1.5) is classified, not decoded."""
    line = (
        'time="2024-05-01T10:00:00Z" level=error msg="Handler for POST /v1.41/containers/abc/start'
        " returned error: failed to create shim task: OCI runtime create failed: runc create"
        " failed: unable to start container process: error during container init: error setting"
        " rlimits for ready process: error setting rlimit type 7: operation not permitted:"
        ' unknown"'
    )
    explanation = explain(line)
    assert explanation is not None
    assert explanation.category is Category.RUNTIME
    assert explanation.details == {"rlimit_type": "7"}
    assert not explanation.fatal


@pytest.mark.parametrize(
    "line",
    [
        "",
        'time="2024-01-01T00:00:00Z" level=info msg="API listen on /var/run/docker.sock"',
        'time="2024-01-01T00:00:00Z" level=info msg="Daemon has completed initialization"',
        "configuration OK",
    ],
)
def test_ordinary_lines_are_not_failures(line: str) -> None:
    """Healthy output is not explained as a failure."""
    assert explain(line) is None


def test_unknown_start_failure_falls_back() -> None:
    """A 'failed to start daemon' the table does not know is still fatal, category unknown."""
    explanation = explain("failed to start daemon: something new happened")
    assert explanation is not None
    assert explanation.category is Category.UNKNOWN
    assert explanation.fatal
    assert "something new happened" in explanation.cause


def test_continuation_lines() -> None:
    """The second lines of two-line messages are told apart from messages."""
    assert is_continuation(" (exit status 4)")
    assert is_continuation("See 'dockerd --help'., Code: 125")
    assert not is_continuation("failed to start daemon: x")


def test_rule_names_are_unique() -> None:
    """Each table entry has its own name (metrics and tests refer to them)."""
    names = [rule.name for rule in RULES]
    assert len(names) == len(set(names))


def test_wrapper_cannot_run_dockerd_is_a_configuration_error() -> None:
    """The exec wrapper's 'cannot run' line: a missing binary, fatal, with the setting to fix."""
    explanation = explain("dind-supervisor policy: cannot run /opt/dockerd: No such file or"
                          " directory")
    assert explanation is not None
    assert (explanation.rule, explanation.category, explanation.fatal) == (
        "cannot_run", Category.CONFIG, True)
    assert "/opt/dockerd" in explanation.cause
    assert "--dockerd-binary" in explanation.remedy


def test_go_panic_is_dockerd_crashing() -> None:
    """A Go panic or fatal error ends dockerd: fatal, quoted with its message."""
    for line in ("panic: runtime error: index out of range [3] with length 3",
                 "fatal error: concurrent map writes"):
        explanation = explain(line)
        assert explanation is not None
        assert explanation.rule == "go_crash"
        assert explanation.fatal
        assert explanation.cause.startswith("dockerd crashed: ")


def test_client_handshake_gives_address_and_reason() -> None:
    """The quick classifier the relay uses: address and reason label, None otherwise."""
    from supervisor.dockerd.failures import HANDSHAKE_REASONS, client_handshake

    line = ("2026/12/01 13:52:11 http: TLS handshake error from 127.0.0.1:48070: remote error:"
            " tls: unknown certificate authority")
    assert client_handshake(line) == ("127.0.0.1:48070", "unknown_ca")
    assert client_handshake("level=info msg=\"API listen on /var/run/docker.sock\"") is None
    assert "other" in HANDSHAKE_REASONS
    assert "eof" in HANDSHAKE_REASONS
