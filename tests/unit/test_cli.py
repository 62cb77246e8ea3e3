"""Tests for supervisor.cli: argument splitting, the default command, exit codes, error output.

The agent is never started: ``_run`` is replaced by a recorder in every test,
so a configuration that unexpectedly validates cannot touch the machine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from supervisor import __version__, cli
from supervisor.config import Config

pytestmark = pytest.mark.unit

NOT_STARTED = 99


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Config]]:
    """Clean environment, the agent replaced by a recorder, logging state restored after."""
    for name in list(os.environ):
        if name.startswith(("DIND_SUPERVISOR_", "DOCKER_", "NOTIFY_SOCKET")):
            monkeypatch.delenv(name)
    started: list[Config] = []

    def fake_run(cfg: Config, **_options: object) -> int:
        started.append(cfg)
        return NOT_STARTED

    monkeypatch.setattr(cli, "_run", fake_run)
    root = logging.getLogger()
    handlers = list(root.handlers)
    yield started
    structlog.reset_defaults()
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)


@pytest.fixture
def started(_isolated: list[Config]) -> list[Config]:
    return _isolated


# Commands ------------------------------------------------------------------------------


def test_version_prints(capsys: pytest.CaptureFixture[str]) -> None:
    """`version` prints the package version and returns 0."""
    assert cli.main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"dind-supervisor {__version__}"


def test_help_returns_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` prints usage with the commands and returns 0."""
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: dind-supervisor" in out
    for command in ("run", "certs", "status", "wait", "check", "version"):
        assert command in out


def test_run_help_lists_setting_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """`run --help` lists a flag for each setting."""
    assert cli.main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--dockerd-start-timeout" in out
    assert "--no-dockerd-live-restore" in out


def test_bad_flag_value_exits_2_naming_key_value_flag(
    capsys: pytest.CaptureFixture[str], started: list[Config]
) -> None:
    """A bad flag value exits 2 and stderr names the key, the value and the flag."""
    assert cli.main(["run", "--log-level", "loud"]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err
    assert "log.level" in err
    assert "'loud'" in err
    assert "flag --log-level" in err
    assert started == []


def test_no_subcommand_defaults_to_run(
    capsys: pytest.CaptureFixture[str], started: list[Config]
) -> None:
    """Arguments without a command are `run`'s: a bad run flag is reported as such (exit 2)."""
    assert cli.main(["--dockerd-mtu", "99999"]) == 2
    err = capsys.readouterr().err
    assert "dockerd.mtu" in err
    assert "99999" in err
    assert "flag --dockerd-mtu" in err
    assert started == []


def test_bad_environment_variable_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown DIND_SUPERVISOR_ variable stops `run` with exit 2, naming the variable."""
    monkeypatch.setenv("DIND_SUPERVISOR_DOCKER_HOST", "x")
    assert cli.main(["run"]) == 2
    assert "DIND_SUPERVISOR_DOCKER_HOST" in capsys.readouterr().err


def test_docker_host_tcp_is_ignored_with_a_note(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], started: list[Config]
) -> None:
    """DOCKER_HOST=tcp://... (a CI job's variable) does not stop `run`: the socket stays the
    default and the config carries a notice naming the variable."""
    monkeypatch.setenv("DOCKER_HOST", "tcp://docker:2376")
    assert cli.main([]) == NOT_STARTED
    [cfg] = started
    assert cfg.dockerd.host == "unix:///var/run/docker.sock"
    [(event, message)] = cfg.notices
    assert event == "docker_host_ignored"
    assert "tcp://docker:2376" in message


def test_docker_host_tcp_note_for_other_commands(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`certs show` with DOCKER_HOST=tcp://... works and says once on stderr that it ignored it."""
    monkeypatch.setenv("DOCKER_HOST", "tcp://docker:2376")
    cli.main(["certs", "show", "--certdir", "/nonexistent-certdir"])
    err = capsys.readouterr().err
    assert err.count("DOCKER_HOST='tcp://docker:2376' is not a unix:// socket") == 1


def test_dockerd_first_word_means_exact_arguments(started: list[Config]) -> None:
    """`-- dockerd ARGS` (ARC's sidecar) loads a config that runs dockerd with exactly ARGS."""
    assert cli.main(["--", "dockerd", "--host=unix:///var/run/docker.sock", "--group=123"]) == (
        NOT_STARTED
    )
    [cfg] = started
    assert cfg.dockerd.exact_args is True
    assert cfg.dockerd.args == ("--host=unix:///var/run/docker.sock", "--group=123")
    assert cfg.sources["dockerd.exact_args"].startswith("arguments after --")


def test_flags_after_the_separator_are_dockerd_flags(started: list[Config]) -> None:
    """`-- --debug` keeps today's meaning: flags added to the agent's own."""
    assert cli.main(["--", "--debug"]) == NOT_STARTED
    [cfg] = started
    assert (cfg.dockerd.exact_args, cfg.dockerd.args) == (False, ("--debug",))


def test_run_help_shows_metavars_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """`run --help` names what each value looks like and its default, not argparse's dest."""
    assert cli.main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "SETTING:" not in out
    assert "--restart-backoff-initial DURATION" in out
    assert "--restart-max-failures COUNT" in out
    assert "--log-level debug|info|warning|error" in out
    assert "(default: 1s)" in out  # restart.backoff_initial
    assert "(default: 1825d)" in out  # tls.ca_lifetime


def test_bad_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad value in the --config file exits 2, naming the file and key."""
    path = tmp_path / "bad.toml"
    path.write_text("[restart]\nmax_failures = 0\n")
    assert cli.main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert "restart.max_failures" in err


def test_unknown_flag_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A flag `run` does not know is a usage error (exit 2) from the parser."""
    assert cli.main(["run", "--no-such-flag"]) == 2
    assert "--no-such-flag" in capsys.readouterr().err


def test_query_commands_check_config_first(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`status` and `wait` also refuse a bad configuration with exit 2 before any request."""
    monkeypatch.setenv("DIND_SUPERVISOR_HTTP_LISTEN", "nowhere")
    assert cli.main(["status"]) == 2
    assert cli.main(["wait", "--timeout", "0"]) == 2
    assert capsys.readouterr().err.count("http.listen") == 2


# What `run` would start with ---------------------------------------------------------------


def test_run_gets_dockerd_args_after_double_dash(started: list[Config]) -> None:
    """`run -- dockerd --debug` hands dockerd exactly ['--debug']."""
    assert cli.main(["run", "--", "dockerd", "--debug", "--mtu=1400"]) == NOT_STARTED
    assert started[0].dockerd.args == ("--debug", "--mtu=1400")


def test_default_command_takes_flags_and_dockerd_args(started: list[Config]) -> None:
    """Without a command, our flags and the dockerd args after `--` both reach `run`."""
    argv = ["--no-dockerd-live-restore", "--log-level", "debug", "--", "--storage-driver", "vfs"]
    assert cli.main(argv) == NOT_STARTED
    cfg = started[0]
    assert cfg.dockerd.live_restore is False
    assert cfg.log.level == "debug"
    assert cfg.dockerd.args == ("--storage-driver", "vfs")
    assert cfg.sources["log.level"] == "flag --log-level"


def test_flags_override_environment(
    monkeypatch: pytest.MonkeyPatch, started: list[Config]
) -> None:
    """A flag wins over the environment for the same key."""
    monkeypatch.setenv("DIND_SUPERVISOR_LIVENESS_FAILURES", "7")
    monkeypatch.setenv("DIND_SUPERVISOR_LIVENESS_INTERVAL", "9s")
    assert cli.main(["--liveness-failures", "2"]) == NOT_STARTED
    assert started[0].liveness.failures == 2
    assert started[0].liveness.interval == 9.0


def test_empty_argv_runs_with_defaults(started: list[Config]) -> None:
    """No arguments at all means `run` with the defaults."""
    assert cli.main([]) == NOT_STARTED
    assert started[0] == Config()


def test_bare_run_builds_no_parser_and_reads_the_same_settings(
    monkeypatch: pytest.MonkeyPatch, started: list[Config], tmp_path: Path
) -> None:
    """The image's `run -- ARGS` skips argparse, with the settings parsing would have given."""
    config_file = tmp_path / "agent.toml"
    config_file.write_text("[liveness]\nfailures = 4\n")
    monkeypatch.setenv("DIND_SUPERVISOR_CONFIG", str(config_file))
    monkeypatch.setenv("DIND_SUPERVISOR_LIVENESS_INTERVAL", "9s")
    monkeypatch.setenv("DOCKER_TLS_CERTDIR", "/certs")
    assert cli.main(["run", "--log-level", "info", "--", "--debug"]) == NOT_STARTED
    parsed = started[0]

    def no_parser() -> None:
        raise AssertionError("the parser was built for a bare `run`")

    monkeypatch.setattr(cli, "build_parser", no_parser)
    assert cli.main(["run", "--", "--debug"]) == NOT_STARTED
    bare = started[1]
    assert bare.liveness.failures == 4
    assert bare.liveness.interval == 9.0
    assert bare.dockerd.args == ("--debug",)
    assert bare == parsed
    assert {k: v for k, v in bare.sources.items() if k != "log.level"} == {
        k: v for k, v in parsed.sources.items() if k != "log.level"
    }


# Helpers ----------------------------------------------------------------------------------


def test_settings_table_names_flags_and_variables() -> None:
    """Each setting row gives its flag and variable in the documented spelling."""
    rows = {row["key"]: row for row in cli.settings_table()}
    row = rows["dockerd.start_timeout"]
    assert row["flag"] == "--dockerd-start-timeout"
    assert row["env"] == "DIND_SUPERVISOR_DOCKERD_START_TIMEOUT"
    assert row["default"] == 60.0


def test_agent_url(started: list[Config]) -> None:
    """The agent URL uses loopback for a wildcard listener and brackets IPv6 hosts."""
    assert cli.agent_url(Config(), None) == "http://127.0.0.1:9324"
    assert cli.agent_url(Config(), "http://10.0.0.1:1/") == "http://10.0.0.1:1"
    cli.main(["--http-listen", "[::1]:9400"])
    assert cli.agent_url(started[0], None) == "http://[::1]:9400"
