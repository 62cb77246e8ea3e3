"""Tests for `status` and `wait` reaching a (fake) running agent over its unix socket.

The agent is tests/unit/fake_agent.py on a socket under tmp_path.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from supervisor import cli
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
