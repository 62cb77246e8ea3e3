"""Stale pid files of dockerd and containerd: decide, remove, report.

Owns: reading a pid file, deciding whether the process it names is a live
Docker daemon, and removing the file when it is not. Does not own starting or
stopping daemons, nor the data-root lock (``ownership``).

Why this exists: after a ``docker kill`` or ``docker restart`` of a dind
container, /var/run/docker.pid survives in the container's layer and names a
pid that the new pid namespace has reused for something else (often a low
pid such as our own). dockerd then refuses to start ("pid file found, ensure
docker is not running", docker-library/docker#104). A pid is only evidence of
a running daemon when that pid is alive *and* is a dockerd or containerd.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DOCKERD_PID_FILE = Path("/var/run/docker.pid")
CONTAINERD_PID_FILE = Path("/var/run/docker/containerd/containerd.pid")
DEFAULT_PID_FILES: tuple[Path, ...] = (DOCKERD_PID_FILE, CONTAINERD_PID_FILE)

DAEMON_NAMES = frozenset({"dockerd", "containerd"})
_MAX_PID_FILE_BYTES = 64  # a pid is at most 7 digits; more is not a pid file


class PidFileState(enum.Enum):
    """What the pid file turned out to hold."""

    MISSING = "missing"  # no file: nothing to do
    GARBAGE = "garbage"  # not a positive integer (empty, text, truncated write)
    UNREADABLE = "unreadable"  # open/read failed (permissions, a directory, I/O)
    DEAD = "dead"  # no such process (or a zombie): stale
    UNRELATED = "unrelated"  # alive, but not dockerd/containerd: pid reused, stale
    DAEMON = "daemon"  # alive dockerd/containerd: another daemon may be running


class PidFileAction(enum.Enum):
    NONE = "none"
    REMOVED = "removed"
    KEPT = "kept"
    REMOVE_FAILED = "remove_failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class PidFileOutcome:
    """One pid file: what was found, what was done, and a sentence for the log."""

    path: Path
    state: PidFileState
    action: PidFileAction
    pid: int | None = None
    process_name: str | None = None  # comm of the live process, when there is one
    error: str | None = None  # why reading or removal failed

    @property
    def daemon_running(self) -> bool:
        """True when a live dockerd/containerd owns this pid file."""
        return self.state is PidFileState.DAEMON

    @property
    def message(self) -> str:
        found = {
            PidFileState.MISSING: "no pid file",
            PidFileState.GARBAGE: "pid file does not hold a pid",
            PidFileState.UNREADABLE: f"pid file cannot be read ({self.error})",
            PidFileState.DEAD: f"pid {self.pid} is not running",
            PidFileState.UNRELATED: (
                f"pid {self.pid} is alive but is {self.process_name!r},"
                " not dockerd/containerd (pid reused)"
            ),
            PidFileState.DAEMON: (
                f"pid {self.pid} is a running {self.process_name}: another daemon may be"
                " using this exec root and data root; stop it first"
            ),
        }[self.state]
        done = {
            PidFileAction.NONE: "",
            PidFileAction.REMOVED: "; removed the stale file",
            PidFileAction.KEPT: "; left it in place",
            PidFileAction.REMOVE_FAILED: f"; could not remove it ({self.error})",
        }[self.action]
        return f"{self.path}: {found}{done}"

    def as_log(self) -> dict[str, object]:
        """Key/value context for a structlog event (``pid_file_checked``)."""
        return {
            "path": str(self.path),
            "state": self.state.value,
            "action": self.action.value,
            "pid": self.pid,
            "process": self.process_name,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessIdentity:
    """What /proc says about a live pid; every field may be missing (races, permissions)."""

    comm: str | None
    exe: str | None
    argv0: str | None
    state: str | None  # the one-letter state from /proc/<pid>/stat


def parse_pid(raw: bytes) -> int | None:
    """The pid a pid file holds, or None when the content is not exactly one positive pid."""
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if not text.isdigit():  # rejects "", "-1", "12 34", "1e3"
        return None
    pid = int(text)
    return pid if pid > 0 else None


def read_identity(pid: int, proc_root: Path) -> ProcessIdentity | None:
    """Identify a pid from /proc, or None when it does not exist."""
    base = proc_root / str(pid)
    if not base.is_dir():
        return None
    return ProcessIdentity(
        comm=_read_text(base / "comm"),
        exe=_readlink(base / "exe"),
        argv0=_argv0(base / "cmdline"),
        state=_stat_state(base / "stat"),
    )


def is_daemon(identity: ProcessIdentity) -> bool:
    """Whether a live process is a dockerd or containerd.

    Any one of comm, exe or argv[0] naming a daemon is enough: wrongly keeping
    a stale file only delays a start with a clear message, while wrongly
    removing a live daemon's file lets a second dockerd corrupt the data root.
    """
    names = {identity.comm}
    for path in (identity.exe, identity.argv0):
        if path:
            names.add(os.path.basename(path.removesuffix(" (deleted)")))
    return bool(names & DAEMON_NAMES)


def classify(raw: bytes, proc_root: Path) -> tuple[PidFileState, int | None, str | None]:
    """Pure-ish decision for one pid file's content: (state, pid, process name)."""
    pid = parse_pid(raw)
    if pid is None:
        return PidFileState.GARBAGE, None, None
    identity = read_identity(pid, proc_root)
    # A zombie has exited and only waits to be reaped: it holds no data root.
    if identity is None or identity.state in {"Z", "X"}:
        return PidFileState.DEAD, pid, None
    name = identity.comm or identity.exe or identity.argv0 or "an unknown process"
    if is_daemon(identity):
        return PidFileState.DAEMON, pid, name
    return PidFileState.UNRELATED, pid, name


def clean_stale_pid_files(
    paths: Sequence[Path] = DEFAULT_PID_FILES, proc_root: Path = Path("/proc")
) -> list[PidFileOutcome]:
    """Remove each pid file that does not name a live dockerd/containerd; report all of them.

    Never raises for a single file: failures are part of the outcome, so one
    unremovable file does not hide what happened to the others. Call it before
    dockerd starts (after taking the data-root lock, so no other agent of ours
    can be starting a daemon meanwhile).
    """
    return [_clean_one(path, proc_root) for path in paths]


def _clean_one(path: Path, proc_root: Path) -> PidFileOutcome:
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_PID_FILE_BYTES + 1)
    except FileNotFoundError:
        return PidFileOutcome(path=path, state=PidFileState.MISSING, action=PidFileAction.NONE)
    except IsADirectoryError:
        # Not something dockerd wrote; removing a directory is not ours to do.
        return PidFileOutcome(
            path=path,
            state=PidFileState.UNREADABLE,
            action=PidFileAction.KEPT,
            error="it is a directory; remove it by hand",
        )
    except OSError as exc:
        return _remove(path, PidFileState.UNREADABLE, None, None, read_error=_strerror(exc))

    if len(raw) > _MAX_PID_FILE_BYTES:
        return _remove(path, PidFileState.GARBAGE, None, None)
    state, pid, name = classify(raw, proc_root)
    if state is PidFileState.DAEMON:
        return PidFileOutcome(
            path=path, state=state, action=PidFileAction.KEPT, pid=pid, process_name=name
        )
    return _remove(path, state, pid, name)


def _remove(
    path: Path,
    state: PidFileState,
    pid: int | None,
    name: str | None,
    *,
    read_error: str | None = None,
) -> PidFileOutcome:
    try:
        path.unlink()
    except FileNotFoundError:
        action, error = PidFileAction.REMOVED, read_error  # gone meanwhile: same result
    except OSError as exc:
        action = PidFileAction.REMOVE_FAILED
        error = f"{read_error}; {_strerror(exc)}" if read_error else _strerror(exc)
    else:
        action, error = PidFileAction.REMOVED, read_error
    return PidFileOutcome(
        path=path, state=state, action=action, pid=pid, process_name=name, error=error
    )


def _strerror(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip() or None
    except OSError:
        return None


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _argv0(path: Path) -> str | None:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    first = raw.split(b"\0", 1)[0]
    return first.decode("utf-8", errors="replace") or None


def _stat_state(path: Path) -> str | None:
    text = _read_text(path)
    if text is None:
        return None
    # comm sits in parentheses and may itself contain ") ": split at the last one.
    _, sep, rest = text.rpartition(")")
    fields = rest.split()
    return fields[0] if sep and fields else None
