"""Unit tests for stale pid file handling against a fake /proc tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from supervisor.dataroot import (
    PidFileAction,
    PidFileState,
    clean_stale_pid_files,
)
from supervisor.dataroot.pidfiles import ProcessIdentity, is_daemon, parse_pid

pytestmark = pytest.mark.unit


def fake_process(
    proc: Path,
    pid: int,
    *,
    comm: str | None,
    exe: str | None = None,
    cmdline: bytes | None = None,
    state: str = "S",
) -> None:
    base = proc / str(pid)
    base.mkdir(parents=True)
    if comm is not None:
        (base / "comm").write_text(comm + "\n")
        (base / "stat").write_text(f"{pid} ({comm}) {state} 1 1 1 0 -1\n")
    if exe is not None:
        os.symlink(exe, base / "exe")
    if cmdline is not None:
        (base / "cmdline").write_bytes(cmdline)


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    root.mkdir()
    return root


@pytest.fixture
def run(tmp_path: Path) -> Path:
    root = tmp_path / "run"
    root.mkdir()
    return root


def test_dead_pid_file_is_removed(proc: Path, run: Path) -> None:
    """A pid with no /proc entry is stale: the file goes and the outcome says why."""
    pidfile = run / "docker.pid"
    pidfile.write_text("4242")
    [outcome] = clean_stale_pid_files([pidfile], proc_root=proc)
    assert not pidfile.exists()
    assert outcome.state is PidFileState.DEAD
    assert outcome.action is PidFileAction.REMOVED
    assert outcome.pid == 4242
    assert "4242 is not running" in outcome.message
    assert "removed" in outcome.message


def test_live_dockerd_is_kept_and_reported(proc: Path, run: Path) -> None:
    """A live dockerd keeps its pid file, and the outcome warns of another daemon."""
    fake_process(proc, 17, comm="dockerd", exe="/usr/bin/dockerd")
    pidfile = run / "docker.pid"
    pidfile.write_text("17\n")
    [outcome] = clean_stale_pid_files([pidfile], proc_root=proc)
    assert pidfile.read_text() == "17\n"
    assert outcome.state is PidFileState.DAEMON
    assert outcome.action is PidFileAction.KEPT
    assert outcome.daemon_running
    assert outcome.process_name == "dockerd"
    assert "another daemon" in outcome.message


def test_live_containerd_is_kept(proc: Path, run: Path) -> None:
    """A live containerd named in containerd.pid is not touched."""
    fake_process(proc, 30, comm="containerd")
    pidfile = run / "containerd.pid"
    pidfile.write_text("30")
    [outcome] = clean_stale_pid_files([pidfile], proc_root=proc)
    assert pidfile.exists()
    assert outcome.daemon_running


def test_reused_pid_of_unrelated_process_is_removed(proc: Path, run: Path) -> None:
    """A pid reused by another program (here our own python) is not dockerd: stale."""
    fake_process(
        proc, 1, comm="python3", exe="/usr/bin/python3.11", cmdline=b"python3\0-m\0supervisor\0"
    )
    pidfile = run / "docker.pid"
    pidfile.write_text("1")
    [outcome] = clean_stale_pid_files([pidfile], proc_root=proc)
    assert not pidfile.exists()
    assert outcome.state is PidFileState.UNRELATED
    assert outcome.process_name == "python3"
    assert not outcome.daemon_running
    assert "pid reused" in outcome.message


def test_zombie_dockerd_counts_as_dead(proc: Path, run: Path) -> None:
    """A dockerd that exited but is not reaped yet holds nothing: its file is stale."""
    fake_process(proc, 99, comm="dockerd", state="Z")
    pidfile = run / "docker.pid"
    pidfile.write_text("99")
    [outcome] = clean_stale_pid_files([pidfile], proc_root=proc)
    assert outcome.state is PidFileState.DEAD
    assert not pidfile.exists()


def test_renamed_comm_but_dockerd_exe_is_still_a_daemon(proc: Path, run: Path) -> None:
    """comm can be changed by a process; a dockerd exe (even deleted by an upgrade) counts."""
    fake_process(proc, 55, comm="worker", exe="/usr/bin/dockerd (deleted)")
    pidfile = run / "docker.pid"
    pidfile.write_text("55")
    [outcome] = clean_stale_pid_files([pidfile], proc_root=proc)
    assert outcome.state is PidFileState.DAEMON
    assert pidfile.exists()


def test_argv0_names_daemon_when_exe_unreadable(proc: Path, run: Path) -> None:
    """Without an exe link (no permission), argv[0] is still evidence of a daemon."""
    fake_process(proc, 56, comm=None, cmdline=b"/usr/local/bin/containerd\0--config\0x\0")
    pidfile = run / "containerd.pid"
    pidfile.write_text("56")
    [outcome] = clean_stale_pid_files([pidfile], proc_root=proc)
    assert outcome.state is PidFileState.DAEMON


@pytest.mark.parametrize(
    "content", [b"", b"\n", b"abc", b"-5", b"0", b"12 34", b"\xff\xfe", b"9" * 80]
)
def test_garbage_content_is_removed(proc: Path, run: Path, content: bytes) -> None:
    """Anything other than one positive pid is removed and reported as garbage."""
    pidfile = run / "docker.pid"
    pidfile.write_bytes(content)
    [outcome] = clean_stale_pid_files([pidfile], proc_root=proc)
    assert outcome.state is PidFileState.GARBAGE
    assert outcome.action is PidFileAction.REMOVED
    assert not pidfile.exists()


def test_missing_file_is_reported_without_action(proc: Path, run: Path) -> None:
    """No pid file: nothing done, and that is said."""
    [outcome] = clean_stale_pid_files([run / "docker.pid"], proc_root=proc)
    assert outcome.state is PidFileState.MISSING
    assert outcome.action is PidFileAction.NONE
    assert outcome.message.endswith("no pid file")


def test_directory_in_place_of_pid_file_is_left_alone(proc: Path, run: Path) -> None:
    """A directory at the pid file path is reported unreadable and not deleted."""
    (run / "docker.pid").mkdir()
    [outcome] = clean_stale_pid_files([run / "docker.pid"], proc_root=proc)
    assert outcome.state is PidFileState.UNREADABLE
    assert outcome.action is PidFileAction.KEPT
    assert (run / "docker.pid").is_dir()


def test_removal_failure_is_reported_not_raised(
    proc: Path, run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that cannot be unlinked yields REMOVE_FAILED with the cause, and others proceed."""
    stuck = run / "docker.pid"
    stuck.write_text("4242")
    other = run / "containerd.pid"
    other.write_text("4343")
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        if self == stuck:
            raise PermissionError(13, "Permission denied")
        real_unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    first, second = clean_stale_pid_files([stuck, other], proc_root=proc)
    assert first.action is PidFileAction.REMOVE_FAILED
    assert "Permission denied" in first.message
    assert second.action is PidFileAction.REMOVED
    assert not other.exists()


def test_outcomes_keep_input_order_and_log_fields(proc: Path, run: Path) -> None:
    """Outcomes come back in input order with structured fields for the log."""
    fake_process(proc, 17, comm="dockerd")
    (run / "a.pid").write_text("17")
    (run / "b.pid").write_text("x")
    first, second = clean_stale_pid_files([run / "a.pid", run / "b.pid"], proc_root=proc)
    assert first.as_log()["state"] == "daemon"
    assert second.as_log() == {
        "path": str(run / "b.pid"),
        "state": "garbage",
        "action": "removed",
        "pid": None,
        "process": None,
        "error": None,
    }


def test_parse_pid_accepts_trailing_whitespace_only() -> None:
    """dockerd writes a bare number; surrounding whitespace is tolerated, nothing else."""
    assert parse_pid(b" 123\n") == 123
    assert parse_pid(b"123abc") is None


def test_is_daemon_rejects_lookalikes() -> None:
    """Names that merely contain 'docker' (docker CLI, dockerd-rootless.sh) are not daemons."""
    assert not is_daemon(
        ProcessIdentity(comm="docker", exe="/usr/bin/docker", argv0="docker", state="S")
    )
    assert not is_daemon(
        ProcessIdentity(comm="dockerd-rootles", exe=None, argv0="dockerd-rootless.sh", state="S")
    )
