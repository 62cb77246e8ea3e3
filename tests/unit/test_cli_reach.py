"""Tests for `status`, `wait` and `check` reaching a (fake) running agent over its unix socket.

The agent is tests/unit/fake_agent.py on a socket under tmp_path. For
`check`, the list of checks is replaced by one that records the
configuration it was given, plus the real TLS-folder check (it only reads
the certdir the fake agent names, under tmp_path), so nothing looks at this
machine's own /var/lib/docker.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from supervisor import cli, config, doctor
from supervisor.agent_settings import settings_document
from supervisor.checks import check_tls_files
from supervisor.config import Config
from supervisor.findings import Finding, Severity
from tests.unit.fake_agent import FakeAgent, serve

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No DIND_SUPERVISOR_*/DOCKER_* variable of the machine leaks into a test, and the
    logging set-up the commands make is undone after it."""
    for name in list(os.environ):
        if name.startswith(("DIND_SUPERVISOR_", "DOCKER_")):
            monkeypatch.delenv(name)
    root = logging.getLogger()
    handlers = list(root.handlers)
    yield
    structlog.reset_defaults()
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[FakeAgent]:
    with serve(tmp_path / "agent.sock") as fake:
        yield fake


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[Config]:
    """The configurations `check` ran its checks with."""
    configs: list[Config] = []

    def record(cfg: Config) -> list[Finding]:
        configs.append(cfg)
        return [Finding(topic="recorded", severity=Severity.OK, message="ran")]

    monkeypatch.setattr(doctor, "CHECKS", [record, check_tls_files])
    return configs


def _tls_document(tmp_path: Path) -> dict[str, Any]:
    """What an agent without a `settings` object says: TLS on, a data root, a policy mode."""
    return {
        "schema": 1,
        "dockerd": {"state": "running", "ready": True, "pid": 42},
        "tls": {"enabled": True, "certdir": str(tmp_path / "certs")},
        "data_root": {"path": str(tmp_path / "lib")},
        "policy": {"mode": "strict"},
    }


# status ---------------------------------------------------------------------------


def test_status_over_the_socket(agent: FakeAgent, capsys: pytest.CaptureFixture[str]) -> None:
    """`status --socket` renders the agent's document; `--json` prints it as it is."""
    agent.document = {"schema": 1, "dockerd": {"state": "running", "ready": True, "pid": 42}}
    assert cli.main(["status", "--socket", str(agent.path)]) == 0
    assert "dockerd    running (pid 42), ready" in capsys.readouterr().out
    assert cli.main(["status", "--json", "--socket", str(agent.path)]) == 0
    assert json.loads(capsys.readouterr().out) == agent.document


def test_status_from_the_socket_variable(
    agent: FakeAgent, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """DIND_SUPERVISOR_HTTP_SOCKET (what run-local.sh suggests exporting) replaces --socket."""
    monkeypatch.setenv("DIND_SUPERVISOR_HTTP_SOCKET", str(agent.path))
    assert cli.main(["status", "--json"]) == 0
    assert agent.requests == ["/status"]
    capsys.readouterr()


def test_status_unreachable_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No agent at the socket: exit 1, 'cannot reach the agent at unix:PATH: no such socket'."""
    path = tmp_path / "none.sock"
    assert cli.main(["status", "--socket", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the agent at unix:{path}: no such socket" in err
    assert "remedy:" in err


# wait -----------------------------------------------------------------------------


def test_wait_ready_over_the_socket(agent: FakeAgent) -> None:
    """`wait --socket` exits 0 when /readyz answers 200."""
    agent.ready = True
    assert cli.main(["wait", "--socket", str(agent.path), "--timeout", "5"]) == 0


def test_wait_not_ready_is_told_from_unreachable(
    agent: FakeAgent, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both exit 1: an agent answering 503 is 'not ready', a missing one 'cannot reach'."""
    assert cli.main(["wait", "--socket", str(agent.path), "--timeout", "0.3"]) == 1
    err = capsys.readouterr().err
    assert "dockerd not ready after 0.3 s" in err
    assert "cannot reach" not in err
    missing = tmp_path / "missing.sock"
    assert cli.main(["wait", "--socket", str(missing), "--timeout", "0.3"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the agent at unix:{missing}: no such socket" in err
    assert "not ready" not in err


def test_wait_bad_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed --url exits 2 at once instead of polling for the whole timeout."""
    assert cli.main(["wait", "--url", "not a url", "--timeout", "30"]) == 2
    assert "--url='not a url'" in capsys.readouterr().err


# check ----------------------------------------------------------------------------


def test_check_takes_tls_from_the_running_agent(
    agent: FakeAgent, tmp_path: Path, seen: list[Config], capsys: pytest.CaptureFixture[str]
) -> None:
    """With this shell's TLS unset, check still judges the agent's TLS certdir, and says so."""
    agent.document = _tls_document(tmp_path)
    assert cli.main(["check", "--socket", str(agent.path)]) == 0
    out = capsys.readouterr().out
    assert seen[0].tls_enabled
    assert seen[0].tls.certdir == str(tmp_path / "certs")
    assert seen[0].dockerd.data_root == tmp_path / "lib"
    assert seen[0].policy.mode == "strict"
    assert "TLS is off" not in out
    assert f"{tmp_path / 'certs'} does not exist yet" in out
    first = out.splitlines()[0]
    assert first.startswith(f"[info   ] settings: from the running agent (pid {os.getpid()})"
                            f" at unix:{agent.path}: TLS on ({tmp_path / 'certs'})")
    assert "has no `settings` object" in first


def test_check_uses_every_published_setting(
    agent: FakeAgent, tmp_path: Path, seen: list[Config], capsys: pytest.CaptureFixture[str]
) -> None:
    """With /status' `settings` object, check runs with exactly the agent's configuration."""
    running = config.load(
        env={"DOCKER_TLS_CERTDIR": str(tmp_path / "certs")},
        flags={("liveness", "interval"): "7s", ("dataroot", "gc_enabled"): True,
               ("policy", "dockerd_rlimits"): "nofile=4096"},
        dockerd_args=["--data-root", str(tmp_path / "lib"), "--debug"],
    )
    agent.document = {"schema": 1, "settings": json.loads(json.dumps(settings_document(running)))}
    assert cli.main(["check", "--json", "--socket", str(agent.path)]) == 0
    assert seen[0] == running
    findings = json.loads(capsys.readouterr().out)
    assert findings[0]["topic"] == "settings"
    assert "no `settings` object" not in findings[0]["message"]


def test_check_keeps_the_callers_own_choice(
    agent: FakeAgent, tmp_path: Path, seen: list[Config],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """A variable set in the caller's shell still wins ("what if"), and the note names it."""
    agent.document = {"schema": 1, "settings": settings_document(
        config.load(env={}, flags={("dockerd", "binary"): "/usr/sbin/dockerd"}))}
    monkeypatch.setenv("DIND_SUPERVISOR_DOCKERD_BINARY", "/opt/other/dockerd")
    cli.main(["check", "--socket", str(agent.path)])
    assert seen[0].dockerd.binary == "/opt/other/dockerd"
    out = capsys.readouterr().out
    assert ("this shell's own choice kept for dockerd.binary"
            " (environment DIND_SUPERVISOR_DOCKERD_BINARY)") in out


def test_check_named_socket_unreachable_exits_1(
    tmp_path: Path, seen: list[Config], capsys: pytest.CaptureFixture[str]
) -> None:
    """--socket naming no agent: exit 1 with the reason, and no check runs."""
    path = tmp_path / "none.sock"
    assert cli.main(["check", "--socket", str(path)]) == 1
    assert f"cannot reach the agent at unix:{path}: no such socket" in capsys.readouterr().err
    assert seen == []


def test_check_without_an_agent_uses_this_shell(tmp_path: Path) -> None:
    """The default socket absent (no agent running): this shell's settings, said in a note."""
    local = Config(http=config.HttpConfig(socket=str(tmp_path / "agent.sock")))
    effective = doctor.effective_config(local, socket_path=None)
    assert effective.config is local
    assert effective.enter_pid is None
    assert effective.notes[0].message == (
        f"this shell's configuration (no running agent: no socket at {tmp_path}/agent.sock)"
    )


def test_check_with_a_stale_default_socket_uses_this_shell(tmp_path: Path) -> None:
    """The default socket left by a stopped agent: this shell's settings, and why."""
    import socket

    path = tmp_path / "agent.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))
        local = Config(http=config.HttpConfig(socket=str(path)))
        effective = doctor.effective_config(local, socket_path=None)
    assert effective.config is local
    assert "connection refused" in effective.notes[0].message


def test_check_enters_an_agent_in_other_namespaces(agent: FakeAgent, tmp_path: Path) -> None:
    """An agent in another mount namespace: check is re-run there, at the agent's own
    socket path, through nsenter on the pid the socket reports."""
    published = settings_document(config.load(env={}))
    published["http"]["socket"] = "/run/inside/agent.sock"
    agent.document = {"schema": 1, "settings": published}
    effective = doctor.effective_config(
        Config(), socket_path=str(agent.path), elsewhere=lambda pid: True
    )
    assert (effective.enter_pid, effective.inner_socket) == (os.getpid(), "/run/inside/agent.sock")
    commands: list[list[str]] = []
    code = doctor.check_inside(
        os.getpid(), ("check", "--json", "--socket", str(agent.path)), effective.inner_socket,
        call=lambda command, env: commands.append(command) or 3,
    )
    assert code == 3
    assert commands == [[
        "nsenter", f"--target={os.getpid()}", "--mount", "--pid", "--net",
        f"--wd={os.getcwd()}", "--", sys.executable, "-m", "supervisor",
        "check", "--json", "--socket", str(agent.path), "--socket", "/run/inside/agent.sock",
    ]]


def test_check_does_not_enter_the_same_namespace(agent: FakeAgent, tmp_path: Path) -> None:
    """The agent in this process's own mount namespace (here: this very process): no nsenter."""
    agent.document = _tls_document(tmp_path)
    effective = doctor.effective_config(Config(), socket_path=str(agent.path))
    assert effective.enter_pid is None
    assert effective.config.tls.certdir == str(tmp_path / "certs")


def test_a_check_that_entered_never_enters_again(
    agent: FakeAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check run inside the agent's namespaces does not nsenter again, whatever the
    namespace comparison says (a /proc of another pid namespace would mislead it)."""
    agent.document = {"schema": 1}
    monkeypatch.setenv("_DIND_SUPERVISOR_CHECK_ENTERED", "1")
    effective = doctor.effective_config(
        Config(), socket_path=str(agent.path), elsewhere=lambda pid: True
    )
    assert effective.enter_pid is None


def test_check_inside_marks_the_check_it_starts() -> None:
    """check_inside gives nsenter (and so the inner check) an environment with the marker,
    and leaves this process's own environment alone."""
    seen_env: list[str | None] = []

    def call(command: list[str], env: dict[str, str]) -> int:
        seen_env.append(env.get("_DIND_SUPERVISOR_CHECK_ENTERED"))
        return 0

    doctor.check_inside(os.getpid(), ("check",), "/run/x.sock", call=call)
    assert seen_env == ["1"]
    assert "_DIND_SUPERVISOR_CHECK_ENTERED" not in os.environ
