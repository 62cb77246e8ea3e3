"""Tests for supervisor.waiting: the `wait` poll loop (fake clock), its messages and its probe."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from supervisor.agent_client import Endpoint
from supervisor.waiting import Outcome, ready_once, wait_until_ready
from tests.unit.fake_agent import serve

pytestmark = pytest.mark.unit

WHERE = "unix:/run/dind-supervisor/agent.sock"


class FakeTime:
    """A clock that only moves when the code under test pauses."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        assert seconds > 0
        self.pauses.append(seconds)
        self.now += seconds


class Probe:
    """Not ready (reached or not) until its n-th call, recording the timeouts it got."""

    def __init__(self, ready_on_call: int | None, *, reached: bool = True) -> None:
        self.ready_on_call = ready_on_call
        self.reached = reached
        self.calls: list[float] = []

    def __call__(self, timeout: float) -> Outcome:
        self.calls.append(timeout)
        if self.ready_on_call is not None and len(self.calls) >= self.ready_on_call:
            return Outcome(ready=True, reached=True, detail=f"{WHERE}/readyz: 200")
        if self.reached:
            return Outcome(ready=False, reached=True,
                           detail=f"{WHERE}/readyz: 503 dockerd is not ready")
        return Outcome(ready=False, reached=False,
                       detail=f"cannot reach the agent at {WHERE}: connection refused")


def test_ready_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    """Ready on the first probe: exit 0 without pausing or printing."""
    fake, probe = FakeTime(), Probe(ready_on_call=1)
    assert wait_until_ready(probe, timeout=5, clock=fake.clock, pause=fake.pause) == 0
    assert len(probe.calls) == 1
    assert fake.pauses == []
    assert capsys.readouterr().err == ""


def test_ready_after_some_polls() -> None:
    """Ready on the 7th probe: exit 0 after six short pauses."""
    fake, probe = FakeTime(), Probe(ready_on_call=7)
    assert wait_until_ready(probe, timeout=5, clock=fake.clock, pause=fake.pause) == 0
    assert len(probe.calls) == 7
    assert fake.pauses == pytest.approx([0.1] * 6)


def test_never_ready_times_out(capsys: pytest.CaptureFixture[str]) -> None:
    """Reached but never ready: exit 1 after the timeout, saying dockerd is not ready and
    what the agent answered."""
    fake, probe = FakeTime(), Probe(ready_on_call=None)
    start = fake.now
    assert wait_until_ready(probe, timeout=2.5, clock=fake.clock, pause=fake.pause) == 1
    assert fake.now - start == pytest.approx(2.5)
    assert len(probe.calls) == pytest.approx(26, abs=1)
    err = capsys.readouterr().err
    assert "dockerd not ready after 2.5 s" in err
    assert f"{WHERE}/readyz: 503" in err
    assert "cannot reach" not in err


def test_never_reached_says_unreachable_not_not_ready(capsys: pytest.CaptureFixture[str]) -> None:
    """No agent answered: exit 1 too, but the message says the agent cannot be reached."""
    fake, probe = FakeTime(), Probe(ready_on_call=None, reached=False)
    assert wait_until_ready(probe, timeout=2, clock=fake.clock, pause=fake.pause) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the agent at {WHERE}: connection refused (tried for 2 s)" in err
    assert "remedy: is the agent running?" in err
    assert "not ready" not in err


def test_probe_timeout_bounded() -> None:
    """Each probe gets at most 1 s and at least 50 ms, never more than the time left."""
    fake, probe = FakeTime(), Probe(ready_on_call=None)
    wait_until_ready(probe, timeout=3, clock=fake.clock, pause=fake.pause)
    assert max(probe.calls) == 1.0
    assert min(probe.calls) >= 0.05


def test_zero_timeout_probes_once() -> None:
    """timeout=0 still probes once, then gives up without pausing."""
    fake, probe = FakeTime(), Probe(ready_on_call=None)
    assert wait_until_ready(probe, timeout=0, clock=fake.clock, pause=fake.pause) == 1
    assert len(probe.calls) == 1
    assert fake.pauses == []


# ready_once against a fake agent on a unix socket ------------------------------------


def test_ready_once_200_and_503(tmp_path: Path) -> None:
    """ready_once is ready for 200 on /readyz; 503 is reached but not ready."""
    with serve(tmp_path / "agent.sock") as agent:
        where = [Endpoint(socket_path=str(agent.path))]
        agent.ready = True
        assert ready_once(where, 2.0).ready is True
        agent.ready = False
        outcome = ready_once(where, 2.0)
    assert (outcome.ready, outcome.reached) == (False, True)
    assert outcome.detail == f"unix:{agent.path}/readyz: 503 dockerd is not ready"


def test_ready_once_without_an_agent_is_unreached(tmp_path: Path) -> None:
    """No socket yet (the agent is starting): not reached, with the reason."""
    outcome = ready_once([Endpoint(socket_path=str(tmp_path / "a.sock"))], 1.0)
    assert (outcome.ready, outcome.reached) == (False, False)
    assert outcome.detail.endswith("no such socket")


def test_ready_once_connection_refused_on_tcp() -> None:
    """An agent not listening on TCP yet: not reached, 'connection refused'."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome = ready_once([Endpoint(url=f"http://127.0.0.1:{port}")], 1.0)
    assert (outcome.reached, outcome.detail.endswith("connection refused")) == (False, True)
