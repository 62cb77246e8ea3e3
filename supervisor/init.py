"""PID 1: hold every signal, reap every orphan, keep what must outlive an agent, restart it.

Deliberately small, synchronous, and free of third-party imports. Its
signals are blocked from the package's first statement (``supervisor/__init__``)
and taken with sigtimedwait, so none is lost: one that arrives before the
agent handles signals waits, blocked in the agent (a forked child inherits
the mask; the agent unblocks once its receiver is installed).

The agent is a child. It never calls waitpid(-1), so asyncio keeps its
children's exit statuses; PID 1 reaps everything else (containerd-shims that
outlive a dockerd restart, double-forked helpers).

When the agent dies (a signal such as an OOM kill, or an uncaught exception:
exit code ``EXIT_CRASHED``), PID 1 logs one line and forks a new agent, which
takes over the running dockerd from the descriptors PID 1 kept for it
(``fdstore``): dockerd's parentage passes to PID 1 with the agent's death,
and with it dockerd's exit status, which PID 1 reports back (``EXITED``).
More deaths than ``restart_limit`` within ``restart_window`` end that: a last
agent is started only to stop dockerd gracefully, and PID 1 exits 1. If even
that agent dies, PID 1 sends dockerd its one TERM itself, waits
``stop_timeout``, then KILLs it, and then does the same to the containerd the
agent ran (``containerd_pid``; dockerd first, so it never loses its
containerd while it stops): the namespace never ends by SIGKILL while a
graceful stop is possible.

Exit status: the agent's exit code, 128+N when it died of signal N and was
not restarted, and 1 when PID 1 gave up on restarting it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

from supervisor import fdstore, prelisten

# typing.TYPE_CHECKING without importing typing (about 1 MB that PID 1 would keep).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import NoReturn

FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})
HANDLED = (*FORWARDED, signal.SIGCHLD)
# The control channel raises SIGIO when a message arrives (O_ASYNC), so a deposit or a
# REMOVE is taken at once, not at the next poll: a listener handed back must stop queueing
# clients before they connect to it. Blocked and waited for, like the others.
WOKEN = (*HANDLED, signal.SIGIO)
# Wake up now and then even without signals, so a lost SIGCHLD (coalesced
# while we were busy) can never leave a zombie for long, and deposits are read.
_POLL_SECONDS = 1.0
EXIT_CRASHED = 70  # EX_SOFTWARE: the agent's last-resort handler caught an exception
EXIT_GAVE_UP = 1
ROLE_RUN = "run"
ROLE_STOP = "stop"  # adopt dockerd and stop it gracefully, nothing else
# Until the agent says otherwise (SET over the channel).
DEFAULT_RESTART_LIMIT = 5
DEFAULT_RESTART_WINDOW = 600.0
DEFAULT_STOP_TIMEOUT = 20.0


def exit_status(wait_status: int) -> int:
    """Shell convention: the exit code, or 128+N for death by signal N."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def reap() -> list[tuple[int, int]]:
    """Reap every exited child: (pid, wait status) of each."""
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


def _log(event: str, level: str = "error", **fields: object) -> None:
    """One JSON line on stderr, shaped like the agent's (PID 1 has no logging library)."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    parts = [f'"event": "{event}"', f'"level": "{level}"', '"component": "init"',
             f'"timestamp": "{stamp}"']
    for key, value in fields.items():
        text = f'"{value}"' if isinstance(value, str) else ("null" if value is None else value)
        parts.append(f'"{key}": {text}')
    print("{" + ", ".join(parts) + "}", file=sys.stderr, flush=True)


def run(agent: Callable[[], int]) -> int:
    """Fork ``agent`` as a child, supervise it as PID 1, return the exit status."""
    signal.pthread_sigmask(signal.SIG_BLOCK, WOKEN)
    init = Init(agent)
    init.wake_on_messages()
    init.open_recorded_listeners(os.environ)
    return init.loop()


class Init:
    def __init__(self, agent: Callable[[], int], *, clock: Callable[[], float] = time.monotonic):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self.store = fdstore.Store(ours)
        self._agent_end = theirs
        self._agent = agent
        self._clock = clock
        self.agent_pid: int | None = None
        self.role = ROLE_RUN
        self.stop_requested = False
        self.pending: list[int] = []  # signals that came while no agent lived
        self.deaths: list[float] = []
        self.restarts = 0
        self.gave_up = False

    def wake_on_messages(self) -> None:
        """SIGIO to this process whenever the agent writes to the channel (SIGIO blocked)."""
        fd = self.store.sock.fileno()
        fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)

    def open_recorded_listeners(self, env: Mapping[str, str]) -> None:
        """Listen where the previous run listened, before the agent even starts: a client
        connecting meanwhile waits in the backlog (``prelisten``); the agent adopts them."""
        for sock in prelisten.open_recorded(prelisten.record_path(env)):
            self.store.fds.append((prelisten.LISTENER_NAME, sock.detach()))

    # The agent --------------------------------------------------------------

    def start_agent(self, role: str) -> None:
        self.store.drain()  # the dead agent's last deposits belong to the next one
        pid = os.fork()
        if pid == 0:
            self._become_agent(role)
        self.agent_pid, self.role = pid, role
        for signum in self.pending:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)  # blocked in the child until it handles them
        self.pending.clear()

    def _become_agent(self, role: str) -> NoReturn:
        code = EXIT_CRASHED
        try:
            # Its own process group, so a terminal's ^C reaches it once (through us).
            os.setpgid(0, 0)
            self.store.sock.close()
            control = fdstore.hand_over(
                self.store.fds, os.environ, keep=self._agent_end.detach()
            )
            os.environ[fdstore.CONTROL_FD_ENV] = str(control)
            os.environ[fdstore.ROLE_ENV] = role
            os.environ[fdstore.RESTARTS_ENV] = str(self.restarts)
            code = self._agent()
        except SystemExit as exc:
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:  # last resort in a forked child: never return into PID 1's loop
            import traceback

            print("dind-supervisor: agent crashed:", file=sys.stderr)
            traceback.print_exc()
            code = EXIT_CRASHED
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)

    # The loop ---------------------------------------------------------------

    def loop(self) -> int:
        """Runs until the agent has exited for good; returns PID 1's exit status."""
        self.start_agent(ROLE_RUN)
        while True:
            info = signal.sigtimedwait(WOKEN, _POLL_SECONDS)
            self.store.drain()
            if info is not None and info.si_signo in FORWARDED:
                self._on_signal(info.si_signo)
            for pid, status in reap():
                outcome = self._on_reaped(pid, status)
                if outcome is not None:
                    # The kernel kills the rest of the namespace when PID 1 exits;
                    # reap what is already dead so nothing is left as a zombie meanwhile.
                    reap()
                    return outcome

    def _on_signal(self, signum: int) -> None:
        if signum in STOP_SIGNALS:
            self.stop_requested = True
        if self.agent_pid is None:
            self.pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.agent_pid, signum)

    def _pid(self, key: str) -> int | None:
        raw = self.store.values.get(key, "")
        return int(raw) if raw.isdigit() and int(raw) > 0 else None

    def _dockerd_pid(self) -> int | None:
        return self._pid("dockerd_pid")

    def _on_reaped(self, pid: int, status: int) -> int | None:
        if pid == self._dockerd_pid():
            # dockerd outlived an agent and is ours to reap: its agent needs the status.
            self.store.tell_exit(pid, status)
            self.store.values.pop("dockerd_pid", None)
            return None
        if pid == self._pid("containerd_pid"):
            # The agent's containerd, orphaned by that agent's death; its pidfd tells the next.
            self.store.values.pop("containerd_pid", None)
            return None
        if pid != self.agent_pid:
            return None
        self.agent_pid = None
        code = exit_status(status)
        died = os.WIFSIGNALED(status) or code == EXIT_CRASHED
        self.store.drain()
        if not died:
            # The agent left without stopping dockerd (e.g. it refused a configuration
            # that changed while dockerd ran): stop it here rather than by SIGKILL.
            self.stop_dockerd()
            self.stop_containerd()
            return EXIT_GAVE_UP if self.gave_up else code
        self._log_death(pid, status)
        if self.role == ROLE_STOP:
            self.stop_dockerd()
            self.stop_containerd()
            return EXIT_GAVE_UP if self.gave_up else code
        now = self._clock()
        window = self.store.number("restart_window", DEFAULT_RESTART_WINDOW)
        self.deaths = [t for t in self.deaths if now - t < window] + [now]
        limit = int(self.store.number("restart_limit", DEFAULT_RESTART_LIMIT))
        if len(self.deaths) > limit:
            self.gave_up = True
            _log("agent_restarts_exhausted", deaths=len(self.deaths), window_seconds=window,
                 remedy="look at the agent's last lines above; dockerd is stopped gracefully")
            self.start_agent(ROLE_STOP)
            return None
        self.restarts += 1
        if self.store.first("dockerd") is None and self._dockerd_alive():
            # No pidfd (a kernel before 5.3): a new agent could not take this dockerd over
            # safely (a pid alone may be reused), and a second one would not start beside
            # it. Stopped gracefully here; the new agent starts a fresh one.
            self.stop_dockerd()
        stopping = self.stop_requested or self.store.values.get("stopping") == "1"
        self.start_agent(ROLE_STOP if stopping else ROLE_RUN)
        return None

    def _log_death(self, pid: int, status: int) -> None:
        if os.WIFSIGNALED(status):
            signum = os.WTERMSIG(status)
            with contextlib.suppress(ValueError):
                name = signal.Signals(signum).name
                _log("agent_died", pid=pid, signal=name, exit_code=128 + signum)
                return
            _log("agent_died", pid=pid, signal=signum, exit_code=128 + signum)
        else:
            _log("agent_died", pid=pid, exit_code=os.waitstatus_to_exitcode(status),
                 reason="uncaught exception (see the traceback above)")

    # The last resort ----------------------------------------------------------

    def _alive(self, key: str) -> bool:
        pid = self._pid(key)
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _dockerd_alive(self) -> bool:
        return self._alive("dockerd_pid")

    def stop_dockerd(self) -> None:
        """dockerd's one TERM from PID 1, then KILL after ``stop_timeout`` (no agent left)."""
        self._stop("dockerd", "dockerd_pid")

    def stop_containerd(self) -> None:
        """The same for the agent's containerd, once dockerd is gone."""
        self._stop("containerd", "containerd_pid")

    def _stop(self, name: str, key: str) -> None:
        pid = self._pid(key)
        if pid is None or not self._alive(key):
            return
        timeout = self.store.number("stop_timeout", DEFAULT_STOP_TIMEOUT)
        _log(f"{name}_stopped_by_init", level="warning", pid=pid, stop_timeout_seconds=timeout)
        self._signal(name, key, signal.SIGTERM)
        self._signal(name, key, signal.SIGCONT)  # a stopped process would sit on the TERM
        deadline = self._clock() + timeout
        while self._clock() < deadline:
            signal.sigtimedwait(WOKEN, min(_POLL_SECONDS, max(0.0, deadline - self._clock())))
            if any(reaped == pid for reaped, _status in reap()):
                return
        self._signal(name, key, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    def _signal(self, name: str, key: str, signum: int) -> None:
        pidfd = self.store.first(name)
        with contextlib.suppress(ProcessLookupError, OSError):
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signum)
            else:
                pid = self._pid(key)
                if pid is not None:
                    os.kill(pid, signum)


def is_subreaper() -> bool:
    """True when this process adopts its orphaned descendants (PR_SET_CHILD_SUBREAPER)."""
    import ctypes

    pr_get_child_subreaper = 37
    libc = ctypes.CDLL(None, use_errno=True)
    value = ctypes.c_int(0)
    if libc.prctl(pr_get_child_subreaper, ctypes.byref(value), 0, 0, 0) != 0:
        return False
    return value.value != 0
