"""Unit tests for the data-root lock, the foreign-daemon probe and the clean-shutdown marker.

flock conflicts between two open file descriptions even inside one process,
so exclusion is exercised here without children; cross-process cases are in
tests/integration/test_dataroot_kernel.py.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from supervisor.dataroot import (
    LOCK_NAME,
    MARKER_NAME,
    acquire,
    begin_run,
    end_run_cleanly,
    find_foreign_daemon,
)
from supervisor.errors import EXIT_USAGE, DataRootError, DataRootLockedError

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "docker"


@pytest.fixture
def fds() -> Iterator[list[int]]:
    opened: list[int] = []
    yield opened
    for fd in opened:
        os.close(fd)


def test_acquire_creates_root_and_records_holder(root: Path) -> None:
    """The first acquire creates the data root and writes pid, host and since into the lock file."""
    with acquire(root, host="node-a", now=NOW, pid=4321) as lock:
        assert lock.held
        record = json.loads((root / LOCK_NAME).read_text())
        assert record == {"pid": 4321, "host": "node-a", "since": "2024-05-01T12:00:00+00:00"}
        assert os.get_inheritable(lock.fileno()) is False
    assert not lock.held


def test_second_acquire_is_refused_naming_the_holder(root: Path) -> None:
    """While held, another acquire raises DataRootLockedError (exit 2) with pid, host, since."""
    with (
        acquire(root, host="node-a", now=NOW, pid=4321),
        pytest.raises(DataRootLockedError) as caught,
    ):
        acquire(root, host="node-b", now=NOW + timedelta(hours=1), pid=99)
    err = caught.value
    assert (err.holder_pid, err.holder_host, err.since) == (
        4321, "node-a", "2024-05-01T12:00:00+00:00"
    )
    assert err.exit_code == EXIT_USAGE
    assert "pid 4321" in str(err)
    assert "node-a" in str(err)


def test_refused_acquire_leaves_holder_record_intact(root: Path) -> None:
    """A refused attempt must not overwrite the holder's record."""
    with acquire(root, host="node-a", now=NOW, pid=1):
        with pytest.raises(DataRootLockedError):
            acquire(root, host="node-b", now=NOW, pid=2)
        assert json.loads((root / LOCK_NAME).read_text())["host"] == "node-a"


def test_release_lets_the_next_acquire_in_and_is_idempotent(root: Path) -> None:
    """After release another acquire succeeds and replaces the record; release twice is fine."""
    first = acquire(root, host="node-a", now=NOW, pid=1)
    first.release()
    first.release()
    with pytest.raises(ValueError, match="released"):
        first.fileno()
    with acquire(root, host="node-b", now=NOW, pid=2):
        assert json.loads((root / LOCK_NAME).read_text())["host"] == "node-b"


def test_garbage_lock_file_names_unknown_holder(root: Path, fds: list[int]) -> None:
    """A holder whose record is unreadable is still refused, named 'unknown'."""
    root.mkdir()
    (root / LOCK_NAME).write_text("not json")
    fd = os.open(root / LOCK_NAME, os.O_RDONLY)
    fds.append(fd)
    fcntl.flock(fd, fcntl.LOCK_EX)
    with pytest.raises(DataRootLockedError) as caught:
        acquire(root, host="h", now=NOW, pid=1)
    assert caught.value.holder_pid is None
    assert caught.value.holder_host == "unknown"


def test_naive_time_is_rejected(root: Path) -> None:
    """A naive datetime is a programming error, refused before anything is written."""
    with pytest.raises(ValueError, match="timezone-aware"):
        acquire(root, host="h", now=datetime(2024, 1, 1), pid=1)  # noqa: DTZ001
    assert not root.exists()


def test_uncreatable_data_root_is_a_data_root_error(tmp_path: Path) -> None:
    """A data root under a regular file cannot be created: DataRootError with a remedy."""
    (tmp_path / "file").write_text("")
    with pytest.raises(DataRootError) as caught:
        acquire(tmp_path / "file" / "docker", host="h", now=NOW, pid=1)
    assert caught.value.remedy


def test_bare_dockerd_holding_its_database_blocks_acquire(root: Path, fds: list[int]) -> None:
    """A dockerd not run by an agent (flock on volumes/metadata.db) makes acquire refuse."""
    (root / "volumes").mkdir(parents=True)
    db = root / "volumes" / "metadata.db"
    db.write_bytes(b"")
    fd = os.open(db, os.O_RDWR)
    fds.append(fd)
    fcntl.flock(fd, fcntl.LOCK_EX)
    with pytest.raises(DataRootLockedError) as caught:
        acquire(root, host="h", now=NOW, pid=1)
    assert caught.value.holder_pid == os.getpid()  # from the real /proc/locks
    assert "not started by dind-supervisor" in caught.value.holder_host
    # and our lock was not kept: once the daemon is gone, acquire works
    os.close(fds.pop())
    acquire(root, host="h", now=NOW, pid=1).release()


def test_foreign_daemon_pid_from_fake_proc_locks(
    root: Path, tmp_path: Path, fds: list[int]
) -> None:
    """The holder pid is looked up in <proc_root>/locks by device and inode."""
    (root / "network" / "files").mkdir(parents=True)
    db = root / "network" / "files" / "local-kv.db"
    db.write_bytes(b"")
    fd = os.open(db, os.O_RDONLY)
    fds.append(fd)
    fcntl.flock(fd, fcntl.LOCK_EX)
    st = db.stat()
    proc = tmp_path / "proc"
    proc.mkdir()
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    (proc / "locks").write_text(
        "1: POSIX  ADVISORY  WRITE 11 00:01:1 0 EOF\n"
        f"2: FLOCK  ADVISORY  WRITE 777 {dev} 0 EOF\n"
        f"2: -> FLOCK  ADVISORY  WRITE 888 {dev} 0 EOF\n"
    )
    holder = find_foreign_daemon(root, proc_root=proc)
    assert holder is not None
    assert holder.pid == 777
    assert "local-kv.db" in holder.host


def test_no_foreign_daemon_on_fresh_or_idle_root(root: Path) -> None:
    """Absent or unlocked databases mean no foreign daemon."""
    assert find_foreign_daemon(root) is None
    (root / "volumes").mkdir(parents=True)
    (root / "volumes" / "metadata.db").write_bytes(b"")
    assert find_foreign_daemon(root) is None


def test_first_run_is_clean_and_second_without_end_is_unclean(root: Path) -> None:
    """No marker: clean. A marker left by a run that never ended: UncleanStop with its record."""
    root.mkdir()
    assert begin_run(root, NOW, pid=10, host="node-a") is None
    later = NOW + timedelta(minutes=5)
    unclean = begin_run(root, later, pid=20, host="node-a")
    assert unclean is not None
    assert unclean.previous.pid == 10
    assert unclean.previous.since == NOW.isoformat()
    assert unclean.detected_at == later
    assert "did not stop cleanly" in unclean.message
    assert unclean.as_log()["previous_pid"] == 10


def test_clean_end_means_next_start_is_clean(root: Path) -> None:
    """end_run_cleanly removes the marker, so the next begin_run reports nothing; twice is ok."""
    root.mkdir()
    begin_run(root, NOW, pid=10)
    end_run_cleanly(root)
    end_run_cleanly(root)
    assert not (root / MARKER_NAME).exists()
    assert begin_run(root, NOW, pid=11) is None


def test_garbage_marker_still_counts_as_unclean(root: Path) -> None:
    """A truncated marker (crash mid-write of an older version) is unclean with unknown fields."""
    root.mkdir()
    (root / MARKER_NAME).write_bytes(b"\x00\x00")
    unclean = begin_run(root, NOW.astimezone(timezone(timedelta(hours=2))))
    assert unclean is not None
    assert unclean.previous.pid is None
    assert unclean.previous.host == "unknown"
    assert not (root / (MARKER_NAME + ".tmp")).exists()
