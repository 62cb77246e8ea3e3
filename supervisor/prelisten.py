"""The sockets PID 1 opens before anything else, from the previous run's record.

A client that connects while the agent is still starting is refused unless
someone already listens: the agent binds dockerd's sockets some 100-200 ms
after the container starts (interpreter, imports, configuration). On a
restart PID 1 can listen within tens of milliseconds, from what the previous
agent recorded in the data root (``<data root>/.dind-supervisor.listen``):
those sockets go into its fd store as if an agent had deposited them, the
agent adopts the ones its configuration still names and hands the rest back
(``REMOVE``), and the client waits in the backlog until dockerd answers.

The record is a hint, never an authority: an unreadable or odd line is
skipped; a TCP port whose client certificates are not all present stays
closed (GitLab's runner starts a job as soon as a service port accepts, and
the job then reads those certificates); a unix socket another process answers
on is left alone; a host name is not resolved (PID 1 must not wait on DNS).
On a first start there is no record, and the agent binds as before.

Standard library only, no failure escapes: PID 1 imports this module.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat

# typing.TYPE_CHECKING without importing typing (PID 1 keeps what it imports).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

RECORD_NAME = ".dind-supervisor.listen"
LISTENER_NAME = "listener"  # the name of a held listening socket in the fd store
DATA_ROOT_ENV = "DIND_SUPERVISOR_DOCKERD_DATA_ROOT"
DEFAULT_DATA_ROOT = "/var/lib/docker"
BACKLOG = 4096  # clients queue here while dockerd (re)starts
CLIENT_FILES = ("ca.pem", "cert.pem", "key.pem")
_MAX_RECORD = 4096
NO_CLIENT_DIR = "-"


def record_path(env: Mapping[str, str], data_root: str | None = None) -> str:
    """Where the record lives: the data root of the configuration, or as PID 1 finds it
    (the variable or the default; a data root set only in the file is not seen by PID 1)."""
    root = data_root or env.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT
    return os.path.join(root, RECORD_NAME)


def tcp_row(host: str, port: int, client_dir: str | None) -> str:
    return f"tcp {host} {port} {client_dir or NO_CLIENT_DIR}"


def unix_row(path: str, mode: int, gid: int) -> str:
    return f"unix {path} {mode:o} {gid}"


def write_record(path: str, rows: list[str]) -> None:
    """Replace the record (rename over it; no fsync: a lost or torn record only means the
    agent binds, as on a first start). No rows: no record."""
    if not rows:
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write("\n".join(rows) + "\n")
    os.replace(temporary, path)


def open_recorded(path: str) -> list[socket.socket]:
    """The recorded sockets that can be opened now, listening."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read(_MAX_RECORD)
    except (OSError, ValueError):
        return []
    opened = []
    for line in text.splitlines():
        try:
            sock = _open_row(line.split())
        except (OSError, ValueError, OverflowError):
            sock = None
        if sock is not None:
            opened.append(sock)
    return opened


def _open_row(fields: list[str]) -> socket.socket | None:
    if len(fields) == 4 and fields[0] == "tcp" and 0 < int(fields[2]) < 65536:
        return _open_tcp(fields[1], int(fields[2]), fields[3])
    if len(fields) == 4 and fields[0] == "unix":
        return _open_unix(fields[1], int(fields[2], 8), int(fields[3]))
    return None


def client_files_present(client_dir: str) -> bool:
    """The agent's own rule (``TlsFiles.all_present``, which needs dataclasses and pathlib
    that PID 1 does not load): every client file there and not empty."""
    try:
        return all(os.stat(os.path.join(client_dir, name)).st_size > 0 for name in CLIENT_FILES)
    except OSError:
        return False


def _open_tcp(host: str, port: int, client_dir: str) -> socket.socket | None:
    if client_dir != NO_CLIENT_DIR and not client_files_present(client_dir):
        return None
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM,
        flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        return None
    return sock


def _open_unix(path: str, mode: int, gid: int) -> socket.socket | None:
    if not os.path.isabs(path):
        return None
    try:
        existing = os.lstat(path).st_mode
    except FileNotFoundError:
        existing = None
    if existing is not None:
        if not stat.S_ISSOCK(existing) or answers(path):
            return None  # not ours to replace: the agent names the problem
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        return None
    try:
        os.chmod(path, mode & 0o777)
        if os.geteuid() == 0:
            os.chown(path, 0, gid)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)  # the file this bind made
        return None
    return sock


def answers(path: str) -> bool:
    """Another process accepts on the unix socket at ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
    except OSError as exc:
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        probe.close()
    return True
