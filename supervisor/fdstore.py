"""Descriptors that must outlive one agent, kept the way systemd's fd store keeps them.

What must survive the agent's death has an owner that outlives it: PID 1
(``init.py``), or systemd under a unit with ``FileDescriptorStoreMax=``.
The agent deposits a copy of each such descriptor there as soon as it has
it: the listening sockets clients connect to, the data root's lock, and the
running dockerd's pidfd, output pipe and notify socket. A new agent receives
them back exactly as systemd hands stored descriptors to a restarted
service: at fds 3..3+N-1, described by ``LISTEN_FDS``, ``LISTEN_PID`` and
``LISTEN_FDNAMES``. One adoption path serves both owners.

The channel to PID 1 is a ``SOCK_SEQPACKET`` pair (one message per record,
descriptors travel as ``SCM_RIGHTS``). Messages, agent to PID 1:
``STORE name`` (with one descriptor), ``REMOVE name`` (every descriptor of
that name) and ``SET key=value ...`` (numbers PID 1 needs once it is alone:
its restart limits, dockerd's stop timeout, whether a final stop began).
PID 1 to agent: ``EXITED pid status`` when it reaped the dockerd it holds a
pidfd of (after an agent died, dockerd is PID 1's child, and only PID 1 can
read its exit status). PID 1 reads the channel whenever it wakes, so a
deposit is safe from the moment ``sendmsg`` returns: the kernel holds
descriptors in flight.

Standard library only: PID 1 imports this module.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator, Mapping, MutableMapping

# Handed from PID 1 to the agent it forks (the leading underscore keeps them
# out of the DIND_SUPERVISOR_ settings namespace, which refuses unknown names).
CONTROL_FD_ENV = "_DIND_SUPERVISOR_INIT_CONTROL_FD"
ROLE_ENV = "_DIND_SUPERVISOR_INIT_ROLE"
RESTARTS_ENV = "_DIND_SUPERVISOR_INIT_RESTARTS"
INTERNAL_PREFIX = "_DIND_SUPERVISOR_INIT_"
ACTIVATION_VARS = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")
FIRST_FD = 3
# Far above anything an agent opens first, so renumbering never clobbers a source.
_HIGH_FD = 256
_MAX_MESSAGE = 4096
_MAX_FDS_PER_MESSAGE = 1


def inherited(env: MutableMapping[str, str], *, pid: int | None = None) -> list[tuple[str, int]]:
    """(name, fd) of every descriptor handed over systemd-style, in fd order.

    Only when ``LISTEN_PID`` names this process: a LISTEN_FDS left in the
    environment by an ancestor describes descriptors that are not ours. The
    variables are removed, so no child (dockerd) can take them for its own.
    """
    expected = os.getpid() if pid is None else pid
    raw_count, raw_pid = env.get("LISTEN_FDS", ""), env.get("LISTEN_PID", "")
    names = env.get("LISTEN_FDNAMES", "")
    for name in ACTIVATION_VARS:
        env.pop(name, None)
    if not raw_count.isdigit() or raw_pid != str(expected):
        return []
    count = int(raw_count)
    labels = names.split(":") if names else []
    found = []
    for index in range(count):
        fd = FIRST_FD + index
        label = labels[index] if index < len(labels) and labels[index] else "unknown"
        with contextlib.suppress(OSError):
            os.set_inheritable(fd, False)  # ours now: dockerd gets them only on purpose
            found.append((label, fd))
    return found


def hand_over(stored: list[tuple[str, int]], env: MutableMapping[str, str], *,
              keep: int | None = None) -> int | None:
    """In a freshly forked child: move ``stored`` to fds 3.. and describe them in ``env``.

    ``keep`` is another descriptor the child needs (the control channel);
    it is moved out of the way and its new number returned. The descriptors'
    old numbers are closed, so nothing is held twice.
    """
    high = [(name, fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD)) for name, fd in stored]
    kept = None if keep is None else fcntl.fcntl(keep, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD)
    targets = range(FIRST_FD, FIRST_FD + len(high))
    originals = {fd for _name, fd in stored} | ({keep} if keep is not None else set())
    for fd in originals - set(targets):
        os.close(fd)
    for index, (_name, fd) in enumerate(high):
        os.dup2(fd, FIRST_FD + index)  # whatever sat there before is replaced
        os.close(fd)
    for name in ACTIVATION_VARS:
        env.pop(name, None)
    if high:
        env["LISTEN_FDS"] = str(len(high))
        env["LISTEN_PID"] = str(os.getpid())
        env["LISTEN_FDNAMES"] = ":".join(name for name, _fd in high)
    return kept


def pidfd_pid(fd: int, proc_root: str = "/proc") -> int | None:
    """The pid a pidfd refers to (``Pid:`` in its fdinfo; -1 once the process is gone)."""
    try:
        with open(f"{proc_root}/self/fdinfo/{fd}", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Pid:"):
                    pid = int(line.split()[1])
                    return pid if pid > 0 else None
    except (OSError, ValueError):
        return None
    return None


# The channel --------------------------------------------------------------


def encode_set(values: Mapping[str, object]) -> bytes:
    return ("SET " + " ".join(f"{key}={value}" for key, value in values.items())).encode()


def parse_set(payload: str) -> dict[str, str]:
    found = {}
    for item in payload.split():
        key, sep, value = item.partition("=")
        if sep and key:
            found[key] = value
    return found


def receive(sock: socket.socket) -> Iterator[tuple[str, list[int]]]:
    """Every message waiting on ``sock`` (non-blocking): (text, descriptors)."""
    fds_size = socket.CMSG_SPACE(_MAX_FDS_PER_MESSAGE * array.array("i").itemsize)
    while True:
        try:
            data, ancillary, _flags, _address = sock.recvmsg(
                _MAX_MESSAGE, fds_size, socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        if not data and not ancillary:
            return  # the other end is gone
        fds: list[int] = []
        for level, kind, body in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                numbers = array.array("i")
                numbers.frombytes(body[: len(body) - (len(body) % numbers.itemsize)])
                fds.extend(numbers)
        yield data.decode("utf-8", "replace"), fds


class Store:
    """PID 1's side: the descriptors by name, and the numbers the agent set."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fds: list[tuple[str, int]] = []
        self.values: dict[str, str] = {}

    def drain(self) -> None:
        for text, fds in receive(self.sock):
            verb, _, rest = text.partition(" ")
            taken = 0
            if verb == "STORE" and rest and fds:
                self.fds.append((rest, fds[0]))
                taken = 1
            elif verb == "REMOVE":
                self._remove(rest)
            elif verb == "SET":
                self.values.update(parse_set(rest))
            for extra in fds[taken:]:  # a malformed message must not leak descriptors
                os.close(extra)

    def _remove(self, name: str) -> None:
        keep = []
        for stored_name, fd in self.fds:
            if stored_name == name:
                os.close(fd)
            else:
                keep.append((stored_name, fd))
        self.fds = keep

    def first(self, name: str) -> int | None:
        return next((fd for stored_name, fd in self.fds if stored_name == name), None)

    def number(self, key: str, default: float) -> float:
        try:
            return float(self.values[key])
        except (KeyError, ValueError):
            return default

    def tell_exit(self, pid: int, status: int) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(f"EXITED {pid} {status}".encode(), socket.MSG_DONTWAIT)


class Depositor:
    """The agent's side: deposits descriptors with their owner, if there is one."""

    def __init__(self, sock: socket.socket | None = None, *, notify: str | None = None) -> None:
        self.sock = sock
        self._notify = notify  # systemd's NOTIFY_SOCKET, when the unit keeps an fd store

    @classmethod
    def from_env(cls, env: MutableMapping[str, str]) -> Depositor:
        raw = env.pop(CONTROL_FD_ENV, "")
        if raw.isdigit():
            with contextlib.suppress(OSError):
                sock = socket.socket(fileno=int(raw))
                sock.setblocking(False)
                return cls(sock)
        # systemd (254+) sets $FDSTORE to the unit's FileDescriptorStoreMax.
        fdstore = env.get("FDSTORE", "")
        if fdstore.isdigit() and int(fdstore) > 0 and env.get("NOTIFY_SOCKET"):
            return cls(notify=env["NOTIFY_SOCKET"])
        return cls()

    @property
    def active(self) -> bool:
        return self.sock is not None or self._notify is not None

    def store(self, name: str, fd: int) -> bool:
        if self.sock is not None:
            return _send(self.sock, f"STORE {name}".encode(), [fd])
        if self._notify is not None:
            return _notify(self._notify, f"FDSTORE=1\nFDNAME={name}".encode(), [fd])
        return False

    def remove(self, name: str) -> bool:
        if self.sock is not None:
            return _send(self.sock, f"REMOVE {name}".encode(), [])
        if self._notify is not None:
            return _notify(self._notify, f"FDSTOREREMOVE=1\nFDNAME={name}".encode(), [])
        return False

    def set(self, **values: object) -> bool:
        if self.sock is None:
            return False
        return _send(self.sock, encode_set(values), [])


def _rights(fds: list[int]) -> list[tuple[int, int, bytes]]:
    if not fds:
        return []
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]


def _send(sock: socket.socket, payload: bytes, fds: list[int]) -> bool:
    try:
        sock.sendmsg([payload], _rights(fds))
    except OSError:
        return False
    return True


def _notify(address: str, payload: bytes, fds: list[int]) -> bool:
    target = "\0" + address[1:] if address.startswith("@") else address
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendmsg([payload], _rights(fds), 0, target)
        except OSError:
            return False
    return True
