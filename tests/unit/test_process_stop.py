"""Tests for DockerdProcess.terminate: a hung (stopped) dockerd must not cut queued calls."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.containerd.process import ContainerdProcess
from supervisor.dockerd.process import DockerdProcess
from tests.integration.sandbox import poll

pytestmark = pytest.mark.unit


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A process that dies of TERM (sleep has no handler), killed at teardown."""
    process = subprocess.Popen(["sleep", "60"])
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGSTOP)
    poll(lambda: _state(process.pid) == "T", timeout=10, interval=0.01, what="state T")


def test_a_stopped_dockerd_is_killed_where_it_stands(child: subprocess.Popen[bytes]) -> None:
    """Woken, it would accept the calls queued in the held sockets and cut them: KILL."""
    _stop(child)
    process = DockerdProcess(pid=child.pid, pidfd=None, output=None, own_child=False)
    assert process.stopped()
    process.terminate(stopped=process.stopped())
    assert child.wait(timeout=10) == -signal.SIGKILL


def test_a_running_dockerd_gets_the_graceful_term(child: subprocess.Popen[bytes]) -> None:
    """Not stopped: the one TERM of the graceful stop."""
    process = DockerdProcess(pid=child.pid, pidfd=None, output=None, own_child=False)
    assert not process.stopped()
    process.terminate(stopped=process.stopped())
    assert child.wait(timeout=10) == -signal.SIGTERM


def test_a_stopped_containerd_is_woken_to_stop_cleanly(child: subprocess.Popen[bytes]) -> None:
    """Nobody queues for containerd in a held socket: TERM, then CONT so it can act on it."""
    _stop(child)
    process = ContainerdProcess(pid=child.pid, pidfd=None, output=None, own_child=False)
    process.terminate(stopped=process.stopped())
    assert child.wait(timeout=10) == -signal.SIGTERM
