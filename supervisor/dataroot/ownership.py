"""Exclusive ownership of the data root, and the clean-shutdown marker.

Owns: the lock on ``<data_root>/.dind-supervisor.lock`` (flock), the holder
record written into it, the check that no bare dockerd already holds the data
root, and ``<data_root>/.dind-supervisor.running``. Does not own what happens
when the lock is refused (the CLI exits 2 via ``DataRootLockedError``) nor
the count of unclean stops (the agent's metric).

Why flock: the kernel drops the lock when the last descriptor of the open
file goes away, so a holder killed with -9 never blocks the next start, and
two containers sharing one volume on the same kernel exclude each other
(moby#31600: two daemons on one data root corrupt it).

Why the lock fd is NOT passed to dockerd: dockerd is Go, and Go does not
close descriptors it inherits, so containerd and the shims (which outlive
dockerd by design) would inherit the lock and keep the data root locked after
dockerd is gone, with no holder left to name. The case inheritance would
cover, the agent gone while dockerd lives, does not last: as PID 1 the
agent's init takes the whole pid namespace down with it, and under systemd
the unit's cgroup is killed. A dockerd started by someone else is caught by
the probe of its own bolt database locks (see ``find_foreign_daemon``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

from supervisor.atomicfile import fsync_dir, replace_file
from supervisor.errors import DataRootError, DataRootLockedError

LOCK_NAME = ".dind-supervisor.lock"
MARKER_NAME = ".dind-supervisor.running"
# dockerd opens these bolt databases with an exclusive flock for its lifetime.
DAEMON_LOCKED_FILES = ("volumes/metadata.db", "network/files/local-kv.db")
UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder:
    """Who holds (or held) the data root, as recorded in the lock or marker file."""

    pid: int | None
    host: str
    since: str  # ISO 8601 as written; kept a string so garbage is still shown as is

    def encode(self) -> bytes:
        record = {"pid": self.pid, "host": self.host, "since": self.since}
        return (json.dumps(record) + "\n").encode()

    @classmethod
    def decode(cls, raw: bytes) -> Holder:
        """Best effort: a half-written or foreign file gives ``unknown`` fields, never an error."""
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if not isinstance(data, dict):
            return cls(pid=None, host=UNKNOWN, since=UNKNOWN)
        pid = data.get("pid")
        return cls(
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            host=str(data.get("host") or UNKNOWN),
            since=str(data.get("since") or UNKNOWN),
        )


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")


class DataRootLock:
    """A held data-root lock. ``release()`` (or leaving the ``with`` block) drops it."""

    def __init__(self, *, path: Path, fd: int, holder: Holder) -> None:
        self.path = path
        self.holder = holder
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def fileno(self) -> int:
        """The locked descriptor (close-on-exec; see the module docstring before passing it on)."""
        if self._fd is None:
            raise ValueError(f"lock on {self.path} was released")
        return self._fd

    def release(self) -> None:
        """Drop the lock; idempotent. The holder record stays in the file as history."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> DataRootLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def acquire(
    data_root: Path,
    *,
    host: str,
    now: datetime,
    pid: int,
    proc_root: Path = Path("/proc"),
    check_daemon_locks: bool = True,
) -> DataRootLock:
    """Take the data root for this agent, or raise DataRootLockedError naming the holder.

    Creates the data root (mode 0710, like dockerd) when missing. With
    ``check_daemon_locks``, also refuses when a dockerd that no agent started
    holds the data root's own databases.
    """
    _require_aware(now)
    try:
        data_root.mkdir(mode=0o710, parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        # mkdir(exist_ok=True) says "File exists" for a file in the way, which
        # reads as if nothing were wrong.
        in_the_way = next(
            (p for p in (data_root, *data_root.parents) if p.exists() and not p.is_dir()),
            data_root,
        )
        raise DataRootError(
            f"data root {data_root} is not a directory: {in_the_way} is a file",
            path=str(data_root),
            remedy="move that file away, or point dockerd.data_root (--dockerd-data-root)"
            " at a directory",
        ) from exc
    except OSError as exc:
        raise DataRootError(
            f"cannot create data root {data_root}: {exc.strerror}",
            path=str(data_root),
            remedy="create it, or mount a writable volume there",
        ) from exc
    lock_path = data_root / LOCK_NAME
    holder = Holder(pid=pid, host=host, since=now.isoformat())
    for _ in range(3):  # the file may be replaced between open and flock (rm -rf of the root)
        fd = _open_lock_file(lock_path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = Holder.decode(_read_all(fd))
            os.close(fd)
            raise DataRootLockedError(
                path=str(data_root), holder_pid=other.pid, holder_host=other.host, since=other.since
            ) from None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, lock_path):
            break
        os.close(fd)
    else:
        raise DataRootError(
            f"lock file {lock_path} keeps being replaced while locking it",
            path=str(data_root),
            remedy="make sure nothing else deletes files in the data root",
        )
    lock = DataRootLock(path=lock_path, fd=fd, holder=holder)
    try:
        foreign = find_foreign_daemon(data_root, proc_root) if check_daemon_locks else None
        if foreign is None:
            _record_holder(fd, holder, data_root)
    except BaseException:
        # A lock file this call created and could not fill (a full disk) goes, rather
        # than stay behind empty; still holding the lock, nobody else can be writing it.
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_size == 0:
                lock_path.unlink()
        lock.release()
        raise
    if foreign is not None:
        lock.release()
        raise DataRootLockedError(
            path=str(data_root),
            holder_pid=foreign.pid,
            holder_host=foreign.host,
            since=foreign.since,
        )
    return lock


def _record_holder(fd: int, holder: Holder, data_root: Path) -> None:
    """Write the holder over the old record, then cut the rest: never an empty file.

    Truncating first would leave the file empty when the write fails (a full
    disk), and the next holder could not be named.
    """
    data = holder.encode()
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            what = "the disk is full (no space left on device)"
            remedy = ("free space on the data root's filesystem (df -h, df -i, docker system"
                      " prune) or give the volume more room")
        else:
            what = exc.strerror or str(exc)
            remedy = "the data root must be writable by the agent"
        raise DataRootError(
            f"cannot write the lock record in {data_root}: {what}", path=str(data_root),
            remedy=remedy, no_space=exc.errno in (errno.ENOSPC, errno.EDQUOT),
        ) from None


def adopt_lock(data_root: Path, fd: int, *, pid: int) -> DataRootLock:
    """The lock a previous agent held, handed over with its descriptor (fdstore).

    The flock belongs to the open file description, which never stopped being
    held (PID 1 kept a copy); only the holder record changes to this agent.
    """
    lock_path = data_root / LOCK_NAME
    old = Holder.decode(_read_all(fd))
    holder = Holder(pid=pid, host=old.host, since=old.since)
    with contextlib.suppress(DataRootError):
        _record_holder(fd, holder, data_root)
    return DataRootLock(path=lock_path, fd=fd, holder=holder)


def _open_lock_file(lock_path: Path) -> int:
    try:
        return os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise DataRootError(
            f"cannot open lock file {lock_path}: {exc.strerror}"
            + (" (the filesystem has no free inode or block left)" if full else ""),
            path=str(lock_path.parent),
            remedy="free space and inodes on the data root's filesystem (df -h, df -i)" if full
            else "the data root must be writable by the agent",
        ) from exc


def _read_all(fd: int) -> bytes:
    return os.pread(fd, 4096, 0)


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat(follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def find_foreign_daemon(data_root: Path, proc_root: Path = Path("/proc")) -> Holder | None:
    """A dockerd holding this data root's bolt databases, found without touching it.

    The probe takes and at once drops a non-blocking exclusive flock on each
    database; bolt retries its own lock for a second, so a dockerd starting at
    that instant is not disturbed. The holder's pid comes from /proc/locks.
    """
    for name in DAEMON_LOCKED_FILES:
        path = data_root / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue  # absent (fresh data root) or unreadable: nothing to learn
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            st = os.fstat(fd)
            pid = _flock_owner(st.st_dev, st.st_ino, proc_root)
            # /proc/locks shows 0 for a holder in another pid namespace: the
            # usual case of two containers sharing one volume.
            where = "" if pid else "; its pid is not visible here (another container?)"
            return Holder(
                pid=pid,
                host=f"{UNKNOWN} (a dockerd not started by dind-supervisor holds {name}{where})",
                since=UNKNOWN,
            )
        finally:
            os.close(fd)  # also drops our probe lock
    return None


def _flock_owner(dev: int, ino: int, proc_root: Path) -> int | None:
    """The pid /proc/locks gives for a FLOCK on (dev, ino); None when not visible."""
    want = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    try:
        text = (proc_root / "locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:00:5678 0 EOF"; blocked waiters have "->".
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == want:
            with contextlib.suppress(ValueError):
                pid = int(fields[4])
                return pid if pid > 0 else None
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class UncleanStop:
    """The previous run on this data root did not end with ``end_run_cleanly``."""

    marker: Path
    previous: Holder
    detected_at: datetime

    @property
    def message(self) -> str:
        return (
            f"the previous run on {self.marker.parent} (pid {self.previous.pid} on host"
            f" {self.previous.host!r}, started {self.previous.since}) did not stop cleanly"
        )

    def as_log(self) -> dict[str, object]:
        return {
            "data_root": str(self.marker.parent),
            "previous_pid": self.previous.pid,
            "previous_host": self.previous.host,
            "previous_since": self.previous.since,
        }


def read_marker(data_root: Path) -> Holder | None:
    """The previous run's record when it never ended (None: it stopped cleanly, or none ran)."""
    try:
        previous = (data_root / MARKER_NAME).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataRootError(
            f"cannot read {data_root / MARKER_NAME}: {exc.strerror}",
            path=str(data_root),
            remedy="the data root must be readable and writable by the agent",
        ) from exc
    return Holder.decode(previous)


def begin_run(
    data_root: Path, now: datetime, *, pid: int | None = None, host: str | None = None
) -> UncleanStop | None:
    """Record that a run started; return the previous run's record if it never ended.

    Call with the lock held, so two agents never share the marker. The marker
    is fsynced: a kill -9 loses no page cache, but a host crash would.
    """
    _require_aware(now)
    marker = data_root / MARKER_NAME
    try:
        previous = marker.read_bytes()
    except FileNotFoundError:
        previous = None
    except OSError as exc:
        raise DataRootError(
            f"cannot read {marker}: {exc.strerror}",
            path=str(data_root),
            remedy="the data root must be readable and writable by the agent",
        ) from exc
    record = Holder(
        pid=pid if pid is not None else os.getpid(),
        host=host or UNKNOWN,
        since=now.isoformat(),
    )
    _write_durably(marker, record.encode())
    if previous is None:
        return None
    return UncleanStop(marker=marker, previous=Holder.decode(previous), detected_at=now)


def end_run_cleanly(data_root: Path) -> None:
    """Remove the marker: the next ``begin_run`` sees a clean stop."""
    (data_root / MARKER_NAME).unlink(missing_ok=True)
    fsync_dir(data_root)


def _write_durably(path: Path, data: bytes) -> None:
    try:
        replace_file(path, data)
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise DataRootError(
            f"cannot write {path}: {exc.strerror}"
            + (" (the data root's filesystem is full)" if full else ""),
            path=str(path.parent),
            remedy="free space on the data root's filesystem (df -h, df -i, docker system"
            " prune) or give the volume more room" if full
            else "the data root must be writable by the agent (read-only volume?)",
            no_space=full,
        ) from exc


