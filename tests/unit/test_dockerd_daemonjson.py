"""Tests for supervisor.dockerd.daemonjson: daemon.json checked before dockerd starts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from supervisor import dockerd_flags as flags
from supervisor.dockerd.daemonjson import (
    DaemonJsonSyntaxError,
    check_daemon_json,
    flatten,
    require_usable_daemon_json,
    validate_with_dockerd,
)
from supervisor.dockerd_flags import known_keys_from_help, options_in
from supervisor.errors import EXIT_USAGE, ConfigError
from supervisor.findings import Severity

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent / "fixtures"
HELP_20 = (FIXTURES / "dockerd_help" / "20.10.txt").read_text()
HELP_26 = (FIXTURES / "dockerd_help" / "26.1.txt").read_text()

# The argv the agent builds (process.build_argv) with TLS, and what it adds itself.
AGENT_PART = [
    "--host=unix:///var/run/docker.sock",
    "--host=tcp://0.0.0.0:2376",
    "--tlsverify",
    "--tlscacert=/certs/server/ca.pem",
    "--tlscert=/certs/server/cert.pem",
    "--tlskey=/certs/server/key.pem",
    "--data-root=/var/lib/docker",
    "--exec-root=/var/run/docker",
    "--pidfile=/var/run/docker.pid",
    "--live-restore",
    "--mtu=1450",
]
AGENT = options_in(AGENT_PART)


def argv_for(path: Path, *user: str) -> list[str]:
    return ["dockerd", *AGENT_PART, f"--config-file={path}", *user]


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "daemon.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


# The command line -----------------------------------------------------------------------


def test_flatten_opens_groups_but_not_value_objects() -> None:
    """Nested groups count as their keys; log-opts and runtimes stay values (moby's rule)."""
    flat = flatten({"tls-things": {"tlsverify": True}, "log-opts": {"max-size": "1m"}, "a": 1})
    assert flat == {"tlsverify": True, "log-opts": {"max-size": "1m"}, "a": 1}


# Reading the file -------------------------------------------------------------------------


def test_absent_default_file_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No /etc/docker/daemon.json: dockerd runs with defaults, nothing to report."""
    monkeypatch.setattr(flags, "DEFAULT_CONFIG_FILE", tmp_path / "daemon.json")
    assert check_daemon_json(["dockerd", *AGENT_PART], agent_options=AGENT) == []
    assert require_usable_daemon_json(["dockerd", *AGENT_PART], agent_options=AGENT) == []


def test_absent_explicit_file_is_an_error(tmp_path: Path) -> None:
    """An explicit --config-file that does not exist stops dockerd; the error says so."""
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError, match="does not exist") as caught:
        require_usable_daemon_json(argv_for(missing), agent_options=AGENT)
    assert caught.value.exit_code == EXIT_USAGE
    assert str(missing) in str(caught.value)


def test_empty_file_depends_on_the_version(tmp_path: Path) -> None:
    """20.10 refuses an empty file ("EOF"), 26.1 takes it; unknown version: a warning."""
    argv = argv_for(write(tmp_path, " \n"))
    assert check_daemon_json(argv, agent_options=AGENT, version=(26, 1)) == []
    with pytest.raises(ConfigError, match="is empty"):
        require_usable_daemon_json(argv, agent_options=AGENT, version=(20, 10))
    (warning,) = require_usable_daemon_json(argv, agent_options=AGENT)
    assert warning.severity is Severity.WARNING
    assert warning.remedy is not None
    assert "{}" in warning.remedy


def test_permission_error_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EACCES on open (as for a non-root agent) becomes 'cannot be read', not 'absent'."""
    path = write(tmp_path, "{}")
    real_open = Path.open

    def refuse(self: Path, *args: object, **kwargs: object) -> object:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", refuse)
    findings = check_daemon_json(argv_for(path))
    assert len(findings) == 1
    assert "cannot be read: Permission denied" in findings[0].message
    assert findings[0].data["path"] == str(path)
    assert findings[0].remedy is not None


def test_directory_instead_of_file(tmp_path: Path) -> None:
    """--config-file pointing at a folder (dockerd: 'read ...: is a directory')."""
    with pytest.raises(ConfigError, match="is a directory"):
        require_usable_daemon_json(argv_for(tmp_path))


def test_trailing_comma_gives_line_column_and_text(tmp_path: Path) -> None:
    """A syntax error names the file, the line, the column and the line as written."""
    path = write(tmp_path, '{\n  "debug": true,\n}\n')
    with pytest.raises(DaemonJsonSyntaxError) as caught:
        require_usable_daemon_json(argv_for(path))
    error = caught.value
    assert (error.path, error.line, error.column, error.line_text) == (str(path), 3, 1, "}")
    assert "comma" in error.reason
    assert f"{path}:3:1" in str(error)
    assert error.exit_code == EXIT_USAGE


def test_missing_quote_points_at_its_line(tmp_path: Path) -> None:
    """The offending line's text is carried in the finding's data."""
    path = write(tmp_path, '{\n  "debug": true,\n  "log-level: "info"\n}\n')
    (finding,) = check_daemon_json(argv_for(path))
    assert finding.severity is Severity.ERROR
    assert finding.data["line"] == 3
    assert finding.data["text"] == '  "log-level: "info"'


def test_truncated_file(tmp_path: Path) -> None:
    """A file that ends early (dockerd: 'unexpected EOF') is a syntax error at its end."""
    with pytest.raises(DaemonJsonSyntaxError) as caught:
        require_usable_daemon_json(argv_for(write(tmp_path, '{"debug": true')))
    assert caught.value.line == 1


def test_nan_is_not_json(tmp_path: Path) -> None:
    """Python's parser accepts NaN; Go's does not, so neither do we."""
    with pytest.raises(ConfigError, match="NaN"):
        require_usable_daemon_json(argv_for(write(tmp_path, '{"mtu": NaN}')))


@pytest.mark.parametrize(
    ("content", "kind"),
    [("[1]", "an array"), ('"x"', "a string"), ("null", "null"), ("3", "a number")],
)
def test_top_level_must_be_an_object(tmp_path: Path, content: str, kind: str) -> None:
    """A top level that is not an object is refused, saying what it is instead."""
    with pytest.raises(ConfigError, match=f"is {kind}; dockerd needs a JSON object"):
        require_usable_daemon_json(argv_for(write(tmp_path, content)))


def test_byte_order_mark_depends_on_the_version(tmp_path: Path) -> None:
    """A UTF-8 BOM: an error for 20.10, fine for 26.1, a warning when the version is unknown."""
    argv = argv_for(write(tmp_path, b'\xef\xbb\xbf{"debug": true}'))
    (finding,) = require_usable_daemon_json(argv, agent_options=AGENT)
    assert finding.severity is Severity.WARNING
    assert "byte order mark" in finding.message
    assert check_daemon_json(argv, agent_options=AGENT, version=(26, 1)) == []
    with pytest.raises(ConfigError, match="byte order mark"):
        require_usable_daemon_json(argv, agent_options=AGENT, version=(20, 10))


def test_utf16_with_bom_is_read(tmp_path: Path) -> None:
    """UTF-16 with a BOM (Windows PowerShell's default) decodes, so its clashes are found."""
    path = write(tmp_path, '\ufeff{"hosts": ["tcp://0.0.0.0:2375"]}'.encode("utf-16-le"))
    with pytest.raises(ConfigError) as caught:
        require_usable_daemon_json(argv_for(path), agent_options=AGENT, version=(26, 1))
    assert caught.value.key == "hosts"


def test_invalid_utf8(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 give the offset of the first bad one."""
    with pytest.raises(ConfigError, match="offset 9"):
        require_usable_daemon_json(argv_for(write(tmp_path, b'{"debug":\xff}')))


# Clashes ------------------------------------------------------------------------------------


def test_hosts_clash_names_the_key_and_the_remedy(tmp_path: Path) -> None:
    """`hosts` in the file clashes with the agent's --host; the remedy says what to do."""
    path = write(tmp_path, json.dumps({"hosts": ["tcp://0.0.0.0:2375"]}))
    with pytest.raises(ConfigError) as caught:
        require_usable_daemon_json(argv_for(path), agent_options=AGENT)
    error = caught.value
    assert error.key == "hosts"
    assert error.source == str(path)
    assert error.value == ["tcp://0.0.0.0:2375"]
    assert "the agent" in error.reason
    assert error.remedy is not None
    assert "remove `hosts`" in error.remedy
    assert "IMAGE -H" in error.remedy


@pytest.mark.parametrize(
    ("key", "value", "hint"),
    [
        ("tlsverify", True, "DOCKER_TLS_CERTDIR"),
        ("tlscert", "/x.pem", "DOCKER_TLS_CERTDIR"),
        ("tlskey", "/x.pem", "DOCKER_TLS_CERTDIR"),
        ("tlscacert", "/x.pem", "DOCKER_TLS_CERTDIR"),
        ("data-root", "/data", "DIND_SUPERVISOR_DOCKERD_DATA_ROOT"),
        ("exec-root", "/exec", "DIND_SUPERVISOR_DOCKERD_EXEC_ROOT"),
        ("pidfile", "/p.pid", "DIND_SUPERVISOR_DOCKERD_PIDFILE"),
        ("live-restore", False, "DIND_SUPERVISOR_DOCKERD_LIVE_RESTORE=false"),
        ("mtu", 1400, "DIND_SUPERVISOR_DOCKERD_MTU"),
    ],
)
def test_every_agent_option_clash_is_found(
    tmp_path: Path, key: str, value: object, hint: str
) -> None:
    """Each option the agent passes clashes with its daemon.json key, with its own remedy."""
    path = write(tmp_path, json.dumps({key: value}))
    (finding,) = check_daemon_json(argv_for(path), agent_options=AGENT)
    assert finding.data["key"] == key
    assert finding.remedy is not None
    assert hint in finding.remedy


def test_nested_keys_clash_too(tmp_path: Path) -> None:
    """A clash hidden in a nested group is found, as dockerd flattens it."""
    path = write(tmp_path, json.dumps({"tls-settings": {"tlsverify": True}}))
    (finding,) = check_daemon_json(argv_for(path), agent_options=AGENT)
    assert finding.data["key"] == "tlsverify"


def test_user_flag_clash_has_another_remedy(tmp_path: Path) -> None:
    """A clash with the user's own dockerd argument tells to keep one of the two."""
    path = write(tmp_path, json.dumps({"storage-driver": "vfs", "labels": ["a=b"]}))
    findings = check_daemon_json(
        argv_for(path, "-s", "overlay2", "--label", "c=d"), agent_options=AGENT
    )
    assert [f.data["key"] for f in findings] == ["storage-driver", "labels"]
    assert findings[0].remedy is not None
    assert "keep one" in findings[0].remedy
    assert "the dockerd arguments" in findings[0].message


def test_runtimes_merge_instead_of_clashing(tmp_path: Path) -> None:
    """--add-runtime and `runtimes` are merged by dockerd, not refused."""
    path = write(tmp_path, json.dumps({"runtimes": {"crun": {"path": "/usr/bin/crun"}}}))
    assert check_daemon_json(argv_for(path, "--add-runtime", "x=/x"), agent_options=AGENT) == []


def test_no_clash_when_the_agent_does_not_pass_the_option(tmp_path: Path) -> None:
    """Keys the agent leaves to the file (storage-driver, log-opts) are fine."""
    path = write(tmp_path, json.dumps({"storage-driver": "overlay2", "log-opts": {"a": "b"}}))
    assert check_daemon_json(argv_for(path), agent_options=AGENT) == []


# Unknown keys -------------------------------------------------------------------------------


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    """An unknown key (dockerd refuses it) is named, with the close known one."""
    path = write(tmp_path, json.dumps({"storage-driverr": "vfs", "not-an-option": 1}))
    findings = check_daemon_json(
        argv_for(path), agent_options=AGENT, known_keys=known_keys_from_help(HELP_20, (20, 10))
    )
    assert [f.data["key"] for f in findings] == ["not-an-option", "storage-driverr"]
    assert findings[1].remedy is not None
    assert "did you mean `storage-driver`" in findings[1].remedy


def test_oom_score_adjust_is_unknown_to_26() -> None:
    """`oom-score-adjust` was removed in 25.0: 26.1 refuses it, 20.10 takes it."""
    doc = {"oom-score-adjust": -500}
    keys_26 = known_keys_from_help(HELP_26, (26, 1))
    keys_20 = known_keys_from_help(HELP_20, (20, 10))
    assert not all(k in keys_26 for k in doc)
    assert all(k in keys_20 for k in doc)


# dockerd --validate -------------------------------------------------------------------------


class FakeDockerd:
    """Answers as the real binaries did (outputs captured from 20.10.24 and 26.1.5)."""

    def __init__(self, code: int, output: str) -> None:
        self.code, self.output = code, output
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        self.calls.append(list(argv))
        return self.code, self.output


def test_validate_unsupported_on_20_10() -> None:
    """dockerd 20.10 answers --validate with a usage error: the helper says 'not supported'."""
    fake = FakeDockerd(125, "Status: unknown flag: --validate\nSee 'dockerd --help'., Code: 125\n")
    assert validate_with_dockerd(["dockerd", "--debug"], run=fake) is None
    assert fake.calls == [["dockerd", "--validate", "--debug"]]


def test_validate_ok() -> None:
    """'configuration OK' and exit 0: no findings."""
    assert validate_with_dockerd(["dockerd"], run=FakeDockerd(0, "configuration OK\n")) == []


def test_validate_error_becomes_findings() -> None:
    """A refused configuration becomes error findings explained by the failure table."""
    output = (
        "unable to configure the Docker daemon with file /etc/docker/daemon.json: the following"
        " directives are specified both as a flag and in the configuration file: hosts: (from"
        " flag: [unix:///y.sock], from file: [unix:///x.sock])\n"
    )
    findings = validate_with_dockerd(
        ["dockerd", "-H", "unix:///y.sock"], run=FakeDockerd(1, output)
    )
    assert findings is not None
    (finding,) = findings
    assert finding.severity is Severity.ERROR
    assert "hosts" in finding.message
    assert finding.data["keys"] == "hosts"
    assert finding.remedy is not None


def test_validate_silent_failure_is_still_a_finding() -> None:
    """A non-zero exit without output is not taken for success."""
    findings = validate_with_dockerd(["dockerd"], run=FakeDockerd(1, ""))
    assert findings is not None
    assert "exit code 1" in findings[0].message


# Storage drivers ---------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["overlay2", "vfs", "fuse-overlayfs", "btrfs", "zfs"])
def test_known_storage_drivers_pass(tmp_path: Path, driver: str) -> None:
    """Every graph driver of dockerd 20.10 to 26 is accepted."""
    path = write(tmp_path, json.dumps({"storage-driver": driver}))
    assert require_usable_daemon_json(argv_for(path), agent_options=AGENT) == []


def test_unknown_storage_driver_names_key_value_and_drivers(tmp_path: Path) -> None:
    """dockerd would only say 'driver not supported'; the check names the key and the choices."""
    path = write(tmp_path, '{"storage-driver": "bogus"}')
    with pytest.raises(ConfigError) as raised:
        require_usable_daemon_json(argv_for(path), agent_options=AGENT)
    error = raised.value
    assert (error.key, error.value, error.source) == ("storage-driver", "bogus", str(path))
    assert "overlay2" in error.reason
    assert error.remedy is not None
    assert error.exit_code == EXIT_USAGE


def test_unknown_storage_driver_as_flag(tmp_path: Path) -> None:
    """-s bogus after -- is refused the same way, naming the flag."""
    path = write(tmp_path, "{}")
    with pytest.raises(ConfigError) as raised:
        require_usable_daemon_json(argv_for(path, "-s", "bogus"), agent_options=AGENT)
    assert (raised.value.key, raised.value.source) == ("--storage-driver", "dockerd arguments")


def test_removed_drivers_depend_on_the_version(tmp_path: Path) -> None:
    """aufs is a driver of 20.10 and unknown to 26.1; unknown version: accepted."""
    path = write(tmp_path, '{"storage-driver": "aufs"}')
    assert require_usable_daemon_json(argv_for(path), version=(20, 10)) == []
    assert require_usable_daemon_json(argv_for(path)) == []
    with pytest.raises(ConfigError, match=r"removed in dockerd 24\.0"):
        require_usable_daemon_json(argv_for(path), version=(26, 1))


@pytest.mark.parametrize("extra", [{"experimental": True},
                                   {"features": {"containerd-snapshotter": True}}])
def test_other_driver_names_are_not_judged_where_dockerd_may_take_them(
    tmp_path: Path, extra: dict[str, object]
) -> None:
    """Graph driver plugins (experimental) and containerd snapshotters have other names."""
    path = write(tmp_path, json.dumps({"storage-driver": "overlayfs", **extra}))
    assert require_usable_daemon_json(argv_for(path), agent_options=AGENT) == []


# Before dockerd's spawn ----------------------------------------------------------------------

CAPTURED_26 = (FIXTURES / "dockerd_lines" / "26.1.txt").read_text()


def test_for_validation_drops_the_tls_files_only() -> None:
    """The certificates may not exist yet at the launch; everything else is validated."""
    argv = ["dockerd", *AGENT_PART, "-H", "unix:///x.sock", "--config-file", "/d.json"]
    assert preflight_argv(argv) == [
        "dockerd", "--host=unix:///var/run/docker.sock", "--host=tcp://0.0.0.0:2376",
        "--data-root=/var/lib/docker", "--exec-root=/var/run/docker",
        "--pidfile=/var/run/docker.pid", "--live-restore", "--mtu=1450", "-H=unix:///x.sock",
        "--config-file=/d.json"]


def preflight_argv(argv: Sequence[str]) -> list[str]:
    from supervisor.dockerd.daemonjson import for_validation

    return for_validation(argv)


def test_preflight_runs_validate_on_23_and_later_only(tmp_path: Path) -> None:
    """dockerd 26.1's own refusal (a type error no static check sees) is exit 2 naming the
    key; dockerd 20.10 is not asked; no file, nothing to validate."""
    from supervisor.dockerd.daemonjson import preflight

    path = write(tmp_path, '{"debug": "yes"}')
    line = next(x for x in CAPTURED_26.splitlines() if "Config.CommonConfig.debug" in x
                or "debug of type bool" in x)
    calls: list[list[str]] = []

    def run(argv: Sequence[str]) -> tuple[int, str]:
        calls.append(list(argv))
        return 1, line.replace("/etc/docker/daemon.json", str(path)) + "\n"

    assert preflight(argv_for(path), agent_options=AGENT, version=(20, 10), run=run) == []
    assert calls == []
    with pytest.raises(ConfigError) as raised:
        preflight(argv_for(path), agent_options=AGENT, version=(26, 0), run=run)
    assert calls[0][:2] == ["dockerd", "--validate"]
    assert not any(arg.startswith("--tls") for arg in calls[0])
    assert "`debug`" in raised.value.reason
    assert "dockerd said" in raised.value.reason
    assert raised.value.exit_code == EXIT_USAGE
    calls.clear()
    missing = tmp_path / "none.json"
    assert preflight(argv_for(missing)[:-1], version=(26, 0), run=run,
                     default_file=missing) == []
    assert calls == []


def test_rootless_default_file(tmp_path: Path) -> None:
    """Without --config-file the file is the one dockerd reads by default, given by the caller."""
    path = write(tmp_path, '{"hosts": []}')
    with pytest.raises(ConfigError, match="hosts"):
        require_usable_daemon_json(["dockerd", "--host=unix:///x"], agent_options={"host"},
                                   default_file=path)
