"""Starting one dockerd (or taking over one that runs), and what each start leaves behind.

An ``Incarnation`` is one dockerd process with its own notify socket, so a
message from an old process can never be taken for the new one. The
``Spawner`` builds the command (argv, environment, the exec wrapper with the
held sockets), starts it, and deposits what must outlive the agent with the
fd store (``fdstore``): the pidfd, the output pipe's read end (a pipe nobody
reads would block dockerd's logging; a closed one loses its lines) and the
notify socket, plus dockerd's pid for PID 1. ``release`` takes them back once
that process is gone. ``adopt`` is the other way in: the descriptors a
previous agent deposited, handed to this one at start.

Synchronous on purpose: the launch stage starts dockerd before the event
loop and its imports exist; the Daemon calls it from a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.dockerd.listeners import tcp_ports
from supervisor.dockerd.process import DockerdProcess, ExitSource, LineObserver, spawn
from supervisor.fdstore import Depositor, pidfd_pid
from supervisor.notify import NotifyListener, bind_datagram

PIDFD_NAME = "dockerd"
OUTPUT_NAME = "dockerd-output"
NOTIFY_NAME = "dockerd-notify"
_DROPPED_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
                "LISTEN_FDNAMES", "FDSTORE")


@dataclass(slots=True)
class Incarnation:
    number: int
    process: DockerdProcess
    notify: NotifyListener
    adopted: bool = False


def dockerd_environment(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment minus what belongs to the agent (systemd's and PID 1's)."""
    env = {k: v for k, v in base.items() if k not in _DROPPED_ENV and not k.startswith("_DIND")}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env.update(extra)
    return env


class Spawner:
    def __init__(
        self,
        *,
        argv: Callable[[], list[str]],
        env: Callable[[], dict[str, str]],
        wrap: Callable[[list[str], dict[str, str], list[int]], list[str]],
        listen_fds: Callable[[], list[int]],
        state_dir: Path,
        depositor: Depositor | None = None,
        observers: Sequence[LineObserver] = (),
        exit_source: ExitSource | None = None,
        serves: Callable[[list[str]], list[str]] = lambda argv: [],
    ) -> None:
        self._argv = argv
        self._env = env
        self._wrap = wrap
        self._listen_fds = listen_fds
        self._state_dir = state_dir
        self._depositor = depositor or Depositor()
        self.observers: list[LineObserver] = list(observers)
        self._exit_source = exit_source
        self._serves = serves
        self.last_argv: list[str] = []
        self.last_serves: list[str] = []
        self.last_wrapped = False

    def notify_path(self, number: int) -> Path:
        return self._state_dir / f"notify-{number}.sock"

    def spawn(self, number: int) -> Incarnation:
        """Start dockerd; raises OSError when it cannot be run."""
        path = self.notify_path(number)
        notify_sock = bind_datagram(path)
        try:
            argv = self._argv()
            env = {**self._env(), "NOTIFY_SOCKET": str(path)}
            listen = self._listen_fds()
            command = self._wrap(argv, env, listen)
            spawned = spawn(command, env=env, pass_fds=listen)
        except BaseException:
            notify_sock.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise
        self.last_argv, self.last_wrapped = argv, command != argv
        self.last_serves = self._serves(argv)
        process = DockerdProcess.from_spawn(spawned, observers=self.observers)
        incarnation = Incarnation(number=number, process=process,
                                  notify=NotifyListener(path, notify_sock))
        self._deposit(incarnation)
        return incarnation

    def served_tcp_ports(self) -> list[int]:
        """The TCP ports dockerd serves (its clients there can be watched); for a dockerd
        taken over, the ones this configuration gives it. Blocking (argv may read /proc)."""
        return tcp_ports(self.last_serves or self._serves(self._argv()))

    def describe_last(self) -> dict[str, Any]:
        return {"argv": self.last_argv, "serves": self.last_serves, "wrapped": self.last_wrapped}

    def _deposit(self, incarnation: Incarnation) -> None:
        process = incarnation.process
        # The pid first: PID 1 must know whose exit status to report, should we die.
        self._depositor.set(dockerd_pid=process.pid)
        if process.pidfd is not None:
            self._depositor.store(PIDFD_NAME, process.pidfd)
        if process.output is not None:
            self._depositor.store(OUTPUT_NAME, process.output)
        if incarnation.notify.sock is not None:
            self._depositor.store(NOTIFY_NAME, incarnation.notify.sock.fileno())

    def release(self, incarnation: Incarnation, *, exited: bool = True) -> None:
        """This agent is done with that dockerd. Gone (``exited``): nobody needs its
        descriptors any more. Still running (the agent is ending without stopping it):
        only this process's copies are closed; PID 1 keeps its own for the next agent."""
        if exited:
            for name in (PIDFD_NAME, OUTPUT_NAME, NOTIFY_NAME):
                self._depositor.remove(name)
        incarnation.process.close()
        incarnation.notify.close(unlink=exited)

    def adopt(self, inherited: Sequence[tuple[str, int]], number: int) -> Incarnation | None:
        """The dockerd a previous agent left running, from the descriptors it deposited."""
        fds = dict(inherited)
        pidfd = fds.get(PIDFD_NAME)
        if pidfd is None:
            return None
        pid = pidfd_pid(pidfd)
        if pid is None:  # it exited in between: nothing to take over
            for name in (PIDFD_NAME, OUTPUT_NAME, NOTIFY_NAME):
                if name in fds:
                    with contextlib.suppress(OSError):
                        os.close(fds[name])
            self._depositor.remove(PIDFD_NAME)
            return None
        output = fds.get(OUTPUT_NAME)
        notify_fd = fds.get(NOTIFY_NAME)
        notify_sock = None
        path = self.notify_path(number)
        if notify_fd is not None:
            notify_sock = socket.socket(fileno=notify_fd)
            with contextlib.suppress(OSError):
                name = notify_sock.getsockname()
                if isinstance(name, str) and name:
                    path = Path(name)
        else:
            notify_sock = bind_datagram(path)
        if output is not None:
            os.set_blocking(output, False)
        process = DockerdProcess(pid=pid, pidfd=pidfd, output=output, own_child=False,
                                 observers=self.observers, exit_source=self._exit_source)
        incarnation = Incarnation(number=number, process=process,
                                  notify=NotifyListener(path, notify_sock), adopted=True)
        return incarnation
