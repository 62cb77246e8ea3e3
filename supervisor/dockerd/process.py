"""One dockerd process: its argv, spawning or adopting it, relaying its output, signalling it.

The argv is built as docker:dind builds it (unix socket; TLS listener with
--tlsverify when a certdir is set; without TLS the plain tcp 2375 listener
and ``--tls=false``, so dockerd does not sleep 15 s) and the user's
arguments after ``--`` are appended verbatim; when the agent holds the
sockets (``listeners.py``) the hosts become one ``--host=fd://``.
``IMAGE dockerd ARGS`` gets exactly ARGS.

A ``DockerdProcess`` is known by a pidfd and its output pipe, not by an
asyncio transport: the same object describes a dockerd the agent spawned
(its child: ``waitpid`` gives the exit status), one spawned before the event
loop existed (the launch stage) and one a previous agent left running (PID
1's child since that agent died: PID 1 reports its exit status). dockerd
runs in its own session so that KILL can take its whole process group.
Output (stdout and stderr through one pipe, so their order is kept) is
parsed line by line and re-emitted through structlog.

Deciding when to start or signal belongs to ``lifecycle.py``; this module
only does it. Kernels before 5.3 have no pidfd: exits are then noticed by
polling every ``_POLL_SECONDS``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor.config import PRIVATE_SOCKET, Config
from supervisor.dockerd.listeners import ACTIVATION_HOST, PLAIN_TCP_LISTEN, Plan
from supervisor.dockerd_flags import option_values, user_sets
from supervisor.logs import DockerdLine, emit_dockerd_line, get_logger, parse_dockerd_line
from supervisor.tls.files import TlsFiles

if TYPE_CHECKING:
    from supervisor.dockerd.diagnosis import Diagnosis

__all__ = ["PLAIN_TCP_LISTEN", "DockerdProcess", "LineObserver", "TlsFiles", "build_argv"]

_MAX_LINE = 64 * 1024
_POLL_SECONDS = 0.2

LineObserver = Callable[[DockerdLine], None]
# asyncio's convention for the exit: the code, or -N for death by signal N; None: unknown.
ExitSource = Callable[[int], Awaitable[int | None]]


def build_argv(
    config: Config,
    *,
    tls: TlsFiles | None = None,
    mtu: int | None = None,
    extra: Sequence[str] = (),
    held: Plan | None = None,
) -> list[str]:
    """dockerd's argv; options the user gave after ``--`` are not given twice.

    ``held``: the sockets the agent holds; they replace every --host with one
    ``--host=fd://`` (dockerd takes all inherited sockets from it).
    """
    d = config.dockerd
    user = list(d.args)
    argv = [d.binary]
    if d.exact_args:
        if d.host == PRIVATE_SOCKET:
            # The user's flags name no unix socket; the agent needs one to supervise.
            return [*argv, *user, f"--host={d.host}"]
        return argv + user
    if held is not None and held.active:
        user = list(held.user_args)
        argv.append(ACTIVATION_HOST)
    elif not user_sets(user, "-H", "--host"):
        argv.append(f"--host={d.host}")
        if tls is not None:
            argv.append(f"--host={config.tls.listen}")
        elif d.plain_tcp:
            argv.append(f"--host={PLAIN_TCP_LISTEN}")
    elif d.host not in option_values(user, "--host", "-H"):
        # The user's hosts replace our TCP listeners, but the agent supervises
        # dockerd through its unix socket: that one always stays.
        argv.append(f"--host={d.host}")
    if tls is not None:
        argv += [
            "--tlsverify",
            f"--tlscacert={tls.ca}",
            f"--tlscert={tls.cert}",
            f"--tlskey={tls.key}",
        ]
    elif not user_sets(user, "--tls", "--tlsverify"):
        argv.append("--tls=false")
    if not user_sets(user, "--data-root", "-g", "--graph"):
        argv.append(f"--data-root={d.data_root}")
    if not user_sets(user, "--exec-root"):
        argv.append(f"--exec-root={d.exec_root}")
    if not user_sets(user, "--pidfile", "-p"):
        argv.append(f"--pidfile={d.pidfile}")
    if d.live_restore and not user_sets(user, "--live-restore"):
        argv.append("--live-restore")
    if mtu and not user_sets(user, "--mtu"):
        argv.append(f"--mtu={mtu}")
    return argv + list(extra) + user


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigView:
    """dockerd's argv as the agent will build it, for checking its configuration first."""

    argv: list[str]
    agent_options: frozenset[str]  # long names of the options the agent adds
    default_file: Path  # the daemon.json dockerd reads without --config-file


def config_view(config: Config, env: Mapping[str, str]) -> ConfigView:
    """What dockerd will be given (the held sockets aside: ``--host`` either way)."""
    from supervisor.dockerd_flags import DEFAULT_CONFIG_FILE, options_in
    from supervisor.network import detect_mtu

    tls = TlsFiles.of(config.tls.certdir, "server") if config.tls_enabled else None
    mtu = config.dockerd.mtu or (config.rootless.mtu if config.rootless_on else detect_mtu())
    argv = build_argv(config, tls=tls, mtu=mtu)
    default_file = DEFAULT_CONFIG_FILE
    if config.rootless_on:  # rootless dockerd reads the user's own file
        base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "/")) / ".config")
        default_file = Path(base) / "docker" / "daemon.json"
    return ConfigView(argv=argv, default_file=default_file,
                      agent_options=options_in(argv[1:]) - options_in(config.dockerd.args))


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None  # kernel before 5.3, or the process is already gone


@dataclass(frozen=True, slots=True, kw_only=True)
class Spawned:
    """What a spawn hands over: enough for ``DockerdProcess`` and for the fd store."""

    pid: int
    pidfd: int | None
    output: int
    started_at: float  # wall clock
    popen: subprocess.Popen[bytes] | None


def spawn(argv: Sequence[str], *, env: Mapping[str, str], pass_fds: Sequence[int] = ()) -> Spawned:
    """Start ``argv`` in its own session with one output pipe. Synchronous and quick (vfork+exec):
    usable before the event loop exists. Raises OSError when it cannot be run."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    # A child inherits the signal mask, and dockerd (Go) keeps SIGTERM blocked if
    # it starts with it blocked: the graceful stop would never arrive. As PID 1 the
    # launch runs with the stop signals blocked (they wait for the agent's handlers).
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, ())
    try:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=write_end,
            env=dict(env),
            start_new_session=True,
            pass_fds=tuple(pass_fds),
            preexec_fn=_unblock_signals if blocked else None,  # noqa: PLW1509
        )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    os.set_blocking(read_end, False)
    return Spawned(pid=popen.pid, pidfd=_pidfd(popen.pid), output=read_end,
                   started_at=time.time(), popen=popen)


def _unblock_signals() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


class DockerdProcess:
    """A running dockerd, spawned by this agent or adopted; ``relay_output`` must run."""

    source = "dockerd"  # how its lines are labelled in the agent's log
    # Clients queue for it in the agent's held sockets (see terminate).
    serves_held_sockets = True

    def __init__(
        self,
        *,
        pid: int,
        pidfd: int | None,
        output: int | None,
        own_child: bool,
        observers: Sequence[LineObserver] = (),
        exit_source: ExitSource | None = None,
        popen: subprocess.Popen[bytes] | None = None,
        started_at: float | None = None,
    ) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.output = output
        self.own_child = own_child
        self.started_at = started_at if started_at is not None else time.time()
        self._diagnosis: Diagnosis | None = None
        # Not a copy: observers added later (the agent's, once it exists) see this process too.
        self._observers = observers
        self._exit_source = exit_source
        self._popen = popen
        self._logger: Any = None
        self._returncode: int | None = None
        self._exited = False
        self._reaped = False
        self._output_done: Any = None

    @property
    def output_done(self) -> Any:
        """Set once the output pipe reached its end (the last lines are relayed)."""
        if self._output_done is None:
            import anyio

            self._output_done = anyio.Event()
        return self._output_done

    @property
    def diagnosis(self) -> Diagnosis:
        """What this process printed that may explain its end (the Daemon asks at the exit).

        Made on first use: the failure table's patterns take ~10 ms to compile, which
        the launch does not spend before dockerd's spawn (daemon.py imports it early).
        """
        if self._diagnosis is None:
            from supervisor.dockerd.diagnosis import Diagnosis

            self._diagnosis = Diagnosis()
        return self._diagnosis

    @classmethod
    def from_spawn(
        cls, spawned: Spawned, *, observers: Sequence[LineObserver] = ()
    ) -> DockerdProcess:
        return cls(pid=spawned.pid, pidfd=spawned.pidfd, output=spawned.output, own_child=True,
                   observers=observers, popen=spawned.popen, started_at=spawned.started_at)

    # Output -------------------------------------------------------------------

    async def relay_output(self) -> None:
        """Re-emit every line until dockerd (and whatever shares its pipe) closes it."""
        try:
            if self.output is not None:
                await self._relay(self.output)
        finally:
            self.output_done.set()

    async def _relay(self, fd: int) -> None:
        import anyio

        pending = b""
        while True:
            try:
                await anyio.wait_readable(fd)
                chunk = os.read(fd, _MAX_LINE)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                if pending:
                    self._handle(pending)
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                self._handle(raw)
            while len(pending) >= _MAX_LINE:  # a line without end: cut, never grow forever
                self._handle(pending[:_MAX_LINE])
                pending = pending[_MAX_LINE:]

    @property
    def _log(self) -> Any:
        if self._logger is None:  # not in __init__: the launch spawns before structlog loads
            self._logger = get_logger(pid=self.pid)
        return self._logger

    def _handle(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace")
        parsed = parse_dockerd_line(text)
        if not parsed.message and not parsed.fields:
            return
        explained = self.diagnosis.add(parsed, text)
        if explained is None or explained.category == "runtime":
            emit_dockerd_line(self._log, parsed, self.source)  # runc's: the policy part explains
        elif explained.category == "client_handshake":
            emit_dockerd_line(self._log, parsed, self.source,
                              client_handshake_reason=explained.reason)
        else:
            # A known failure line: its cause and remedy travel with it, at the level it
            # deserves (dockerd prints "unable to configure ..." as a plain line).
            level = "error" if explained.fatal else parsed.level
            emit_dockerd_line(self._log, parsed, self.source, level=level, cause=explained.cause,
                              remedy=explained.remedy, failure_rule=explained.rule)
        for observer in self._observers:
            observer(parsed)

    # Exit ---------------------------------------------------------------------

    async def wait(self) -> int | None:
        """Wait for the exit; asyncio's convention (negative: killed by that signal), None when
        nobody could tell (an adopted dockerd whose status PID 1 did not report)."""
        import anyio

        if self._exited:
            return self._returncode
        if self.pidfd is not None:
            await anyio.wait_readable(self.pidfd)
        else:
            # No pidfd (kernel < 5.3): nothing to wait on but the clock.
            while not self._gone():  # noqa: ASYNC110
                await anyio.sleep(_POLL_SECONDS)
        if self.own_child and not self._reaped:
            # The pidfd turned readable: the child is a zombie, WNOHANG reaps it at once.
            self._gone()
        elif not self.own_child and self._exit_source is not None:
            with anyio.move_on_after(2.0):
                self._returncode = await self._exit_source(self.pid)
        if self._popen is not None:
            self._popen.returncode = self._returncode  # so Popen never warns of a live child
        self._exited = True
        return self._returncode

    def _gone(self) -> bool:
        """Without a pidfd: has the process exited (reaping our own child if so)?"""
        if self.own_child:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self._reaped = True
                return True
            if pid == 0:
                return False
            self._returncode = os.waitstatus_to_exitcode(status)
            self._reaped = True
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def close(self) -> None:
        """Release the descriptors (after the exit, or when handing over)."""
        for fd in (self.pidfd, self.output):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.pidfd = self.output = None

    # Signals ------------------------------------------------------------------

    def send_signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, OSError):
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signum)
            else:
                os.kill(self.pid, signum)

    def terminate(self, *, stopped: bool = False) -> None:
        """The graceful stop's signal; a process the caller found ``stopped()`` is woken or
        ended (see below). The caller reads that, in a thread when it runs on the loop."""
        if self.serves_held_sockets and stopped:
            # A stopped dockerd (SIGSTOP: found hung) can shut down only once woken, and
            # woken it first accepts the calls that queued in the held sockets' backlog
            # meanwhile, then cuts them as it exits. KILL ends it where it stands: those
            # calls stay queued and the next dockerd answers them.
            self.send_signal(signal.SIGKILL)
            return
        self.send_signal(signal.SIGTERM)
        # A stopped process would keep the TERM pending until KILL; CONT lets it shut
        # down cleanly instead.
        self.send_signal(signal.SIGCONT)

    def stopped(self, proc: str = "/proc") -> bool:
        """Stopped by a signal (state T) right now."""
        try:
            with open(f"{proc}/{self.pid}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            return False
        return stat.rpartition(b")")[2].split()[:1] == [b"T"]

    def kill_group(self) -> None:
        """KILL dockerd and everything left in its process group (its session)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.send_signal(signal.SIGKILL)
