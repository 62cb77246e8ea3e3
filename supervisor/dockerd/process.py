"""One dockerd process: its argv, spawning it, relaying its output, signalling it.

The argv is built as docker:dind builds it (unix socket; TLS listener with
--tlsverify when a certdir is set; without TLS the plain tcp 2375 listener
and ``--tls=false``, so dockerd does not sleep 15 s) and the user's
arguments after ``--`` are appended verbatim. ``IMAGE dockerd ARGS`` gets
exactly ARGS. dockerd runs in its own session so that KILL can take its whole
process group. Output (stdout and stderr through one pipe, so their order is
kept) is parsed line by line and re-emitted through structlog.

Deciding when to start or signal belongs to ``lifecycle.py``; this module
only does it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from supervisor.config import PRIVATE_SOCKET, Config
from supervisor.dockerd.flags import option_values, user_sets
from supervisor.logs import DockerdLine, emit_dockerd_line, get_logger, parse_dockerd_line

_MAX_LINE = 64 * 1024
# docker:dind's listener without TLS: no authentication at all.
PLAIN_TCP_LISTEN = "tcp://0.0.0.0:2375"

LineObserver = Callable[[DockerdLine], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def build_argv(
    config: Config,
    *,
    tls: TlsFiles | None = None,
    mtu: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """dockerd's argv; options the user gave after ``--`` are not given twice."""
    d = config.dockerd
    user = list(d.args)
    argv = [d.binary]
    if d.exact_args:
        if d.host == PRIVATE_SOCKET:
            # The user's flags name no unix socket; the agent needs one to supervise.
            return [*argv, *user, f"--host={d.host}"]
        return argv + user
    if not user_sets(user, "-H", "--host"):
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


class DockerdProcess:
    """A spawned dockerd; ``relay_output`` must run for its output to be read."""

    def __init__(self, process: Process, argv: Sequence[str], observers: Sequence[LineObserver]):
        self.process = process
        self.argv = list(argv)
        self.pid = process.pid
        self.last_error_line: str | None = None
        self._observers = list(observers)
        self._output_done = anyio.Event()
        self._log = get_logger(pid=self.pid)

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        observers: Sequence[LineObserver] = (),
        pass_fds: Sequence[int] = (),
    ) -> DockerdProcess:
        process = await anyio.open_process(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
        return cls(process, argv, observers)

    async def relay_output(self) -> None:
        """Re-emit every line until dockerd (and whatever shares its pipe) closes it."""
        if self.process.stdout is None:
            raise RuntimeError("dockerd was spawned without an output pipe")
        stream = BufferedByteReceiveStream(self.process.stdout)
        try:
            while True:
                try:
                    raw = await stream.receive_until(b"\n", _MAX_LINE)
                except anyio.DelimiterNotFound:
                    raw = await stream.receive_exactly(_MAX_LINE)
                except anyio.IncompleteRead:
                    tail = stream.buffer
                    if tail:
                        self._handle(tail)
                    return
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return
                self._handle(raw)
        finally:
            self._output_done.set()

    def _handle(self, raw: bytes) -> None:
        parsed = parse_dockerd_line(raw.decode("utf-8", "replace"))
        if not parsed.message and not parsed.fields:
            return
        if parsed.looks_like_error:
            self.last_error_line = parsed.message
        emit_dockerd_line(self._log, parsed)
        for observer in self._observers:
            observer(parsed)

    async def wait(self, *, output_grace: float = 1.0) -> int:
        """Wait for the exit; give the output relay a moment to drain the last lines."""
        returncode = await self.process.wait()
        # A child that inherited the pipe could keep it open forever.
        with anyio.move_on_after(output_grace):
            await self._output_done.wait()
        return returncode

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
            # A stopped (SIGSTOP, hung) dockerd would keep the TERM pending until
            # KILL; CONT lets it shut down cleanly instead.
            self.process.send_signal(signal.SIGCONT)

    def send_signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.Signals(signum))

    def kill_group(self) -> None:
        """KILL dockerd and everything left in its process group (its session)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
