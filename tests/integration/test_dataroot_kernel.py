"""Data-root features against the real kernel, without dockerd.

Real /proc for pid files, real flock between processes, real mounts (tmpfs,
overlay, an ext4 loop image) made inside a private mount namespace of a
child process, so nothing is visible to the machine and everything goes away
with that child even when a test fails.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.dataroot import PidFileAction, PidFileState, clean_stale_pid_files

pytestmark = pytest.mark.integration

SLEEP = shutil.which("sleep") or "/bin/sleep"


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started by a test; all killed and reaped at the end, pass or fail."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=10)


def test_pid_file_of_dead_process_is_removed(tmp_path: Path) -> None:
    """A pid file naming a process that has exited is removed."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=10)
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text(f"{child.pid}\n")
    [outcome] = clean_stale_pid_files([pidfile])
    assert outcome.action is PidFileAction.REMOVED
    # Reuse of that pid within this instant is possible in theory; dockerd it is not.
    assert outcome.state in {PidFileState.DEAD, PidFileState.UNRELATED}
    assert not pidfile.exists()


def test_live_unrelated_pid_is_not_mistaken_for_dockerd(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """A live `sleep` named in docker.pid is reported as unrelated, its file removed, it lives."""
    sleeper = subprocess.Popen([SLEEP, "300"])
    children.append(sleeper)
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text(str(sleeper.pid))
    [outcome] = clean_stale_pid_files([pidfile])
    assert outcome.state is PidFileState.UNRELATED
    assert outcome.process_name == "sleep"
    assert not outcome.daemon_running
    assert not pidfile.exists()
    assert sleeper.poll() is None


def test_live_process_named_dockerd_keeps_its_pid_file(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    """A live process whose executable is called dockerd is left alone and reported."""
    fake_dockerd = tmp_path / "dockerd"
    shutil.copy(SLEEP, fake_dockerd)
    daemon = subprocess.Popen([str(fake_dockerd), "300"])
    children.append(daemon)
    pidfile = tmp_path / "docker.pid"
    pidfile.write_text(str(daemon.pid))
    [outcome] = clean_stale_pid_files([pidfile])
    assert outcome.state is PidFileState.DAEMON
    assert outcome.action is PidFileAction.KEPT
    assert pidfile.read_text() == str(daemon.pid)
