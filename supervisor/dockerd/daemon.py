"""The dockerd component: carries out what the lifecycle decides, across restarts.

``Daemon.run`` feeds events (exit, READY=1 confirmed by /_ping, ping results,
deadlines, stop and restart requests) into ``lifecycle.next_state`` and
performs the actions it returns: spawn, one TERM, KILL of the group, finish.
It may begin with a dockerd that already runs (``initial``: started by the
launch stage before the event loop, or left by a previous agent), which
enters as ``Adopted``. Each dockerd process lives in its own cancel scope
together with its output relay, its notify listener, and its readiness and
liveness tasks, so nothing of an old process outlives it.

Each exit dockerd was not asked for is explained (``diagnosis.py``): the
line that caused it, with cause and remedy from the failure table, goes to
``dockerd_failed``, /status and the give-up message; a line that names
dockerd's own configuration ends the agent at once with exit 2. A client's
failed TLS handshake is never taken for dockerd's error: it is counted per
reason (``observe_line``).

Signals for dockerd (HUP reloads daemon.json, USR1 dumps stacks) are
delivered only while it is RUNNING: before it installed its handlers a HUP
would kill it. One that arrives earlier is held and delivered once it runs.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import math
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup, TaskStatus

from supervisor.config import Config
from supervisor.dataroot.disk import DiskFigures, disk_figures, full_figures
from supervisor.dockerd import failures
from supervisor.dockerd import lifecycle as lc
from supervisor.dockerd.diagnosis import Failure
from supervisor.dockerd.health import Ping, wait_ready, watch_liveness
from supervisor.dockerd.spawner import Incarnation
from supervisor.errors import DockerdGaveUp, DockerdRefusedConfiguration
from supervisor.logs import DockerdLine, get_logger
from supervisor.metrics import Metrics, exit_code_value

Hook = Callable[[], Awaitable[None]]
StateListener = Callable[[lc.State], None]


class Spawns(Protocol):
    """What the Daemon needs to start and forget dockerd processes (``Spawner`` or a fake)."""

    def spawn(self, number: int) -> Incarnation: ...

    def release(self, incarnation: Incarnation, *, exited: bool = True) -> None: ...

    def describe_last(self) -> dict[str, Any]:
        """How the last dockerd was started, for its ``dockerd_started`` line."""
        ...


class Daemon:
    """Owns one dockerd at a time, from the first start to the final stop."""

    def __init__(
        self,
        *,
        config: Config,
        metrics: Metrics,
        spawner: Spawns,
        ping: Ping,
        ready_check: Ping | None = None,
        before_spawn: Sequence[Hook] = (),
        disk: Callable[[], DiskFigures] | None = None,
        clock: Callable[[], float] = anyio.current_time,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._spawner = spawner
        self._ping = ping
        # Readiness may ask more than liveness (e.g. a TLS handshake on the TCP socket).
        self._ready_check = ready_check or ping
        self._before_spawn = list(before_spawn)
        self._disk = disk or (lambda: disk_figures(config.dockerd.data_root))
        self._clock = clock
        self._wall = wall_clock
        self._log = get_logger(component="dockerd")
        self._machine = lc.Machine(timing=lc.Timing.from_config(config))
        self._send, self._receive = anyio.create_memory_object_stream[lc.Event](math.inf)
        self._current: Incarnation | None = None
        self._incarnation = 0
        self._spawned_at = 0.0
        self._held_signals: list[int] = []
        self.state_listeners: list[StateListener] = []
        self._changed = anyio.Event()  # set and replaced at every state change
        self.since = wall_clock()
        self.restarts: dict[str, int] = {}
        self.last_exit_code: int | None = None
        # Why the last dockerd that ended without being asked to did (None: it said nothing).
        self.last_failure: Failure | None = None
        self._failure_at_exit: Failure | None = None
        self.client_handshake_failures: dict[str, int] = {}
        metrics.declare_states(state.value for state in lc.State)
        metrics.declare_restart_reasons(reason.value for reason in lc.RestartReason)
        metrics.declare_handshake_reasons(failures.HANDSHAKE_REASONS)

    # Views for /status and the other components -------------------------

    @property
    def state(self) -> lc.State:
        return self._machine.state

    @property
    def liveness_ok(self) -> bool:
        """False from the first missed ping until dockerd answers again or is replaced."""
        return self._machine.misses == 0 and self.state is not lc.State.FATAL

    @property
    def pid(self) -> int | None:
        return self._current.process.pid if self._current is not None else None

    @property
    def last_error_line(self) -> str | None:
        return self.last_failure.line if self.last_failure else None

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "ready": self.state is lc.State.RUNNING,
            "pid": self.pid,
            "since": self.since,
            "restarts": dict(self.restarts),
            "crashes_in_window": len(self._machine.crashes),
            "failed_starts_in_window": len(self._machine.failures),
            "last_exit_code": self.last_exit_code,
            "last_error": self.last_error_line,
            "last_failure": self.last_failure.as_status() if self.last_failure else None,
            "client_handshake_failures": dict(self.client_handshake_failures),
            "held_signals": [signal.Signals(s).name for s in self._held_signals],
        }

    # Requests -------------------------------------------------------------

    def request_stop(self) -> None:
        self._event(lc.StopRequested())

    def request_restart(self, reason: lc.RestartReason) -> None:
        self._event(lc.RestartRequested(reason))

    def _event(self, event: lc.Event) -> None:
        # After the final Finish nobody listens any more; a late request changes nothing.
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._send.send_nowait(event)

    def forward_signal(self, signum: int) -> None:
        """Pass a signal to dockerd now if it can take it, else once it runs."""
        name = signal.Signals(signum).name
        if self._current is not None and self.state is lc.State.RUNNING:
            self._log.info("signal_forwarded", signal=name, pid=self.pid)
            self._current.process.send_signal(signum)
            return
        if self._machine.finished or self._machine.stop_requested:
            self._log.info("signal_dropped", signal=name, state=self.state.value,
                           reason="dockerd is stopping for good")
            return
        if signum not in self._held_signals:
            self._held_signals.append(signum)
        self._log.info("signal_held", signal=name, state=self.state.value,
                       reason="dockerd cannot take it before it runs; delivered once it does")

    def _deliver_held(self) -> None:
        held, self._held_signals = self._held_signals, []
        for signum in held:
            if self._current is not None:
                self._log.info("signal_forwarded", signal=signal.Signals(signum).name,
                               pid=self.pid, held=True)
                self._current.process.send_signal(signum)

    # The loop -------------------------------------------------------------

    async def run(
        self,
        initial: Incarnation | None = None,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
        start: bool = True,
    ) -> int:
        """Run until stopped (returns 0) or given up (raises DockerdGaveUp).

        ``start=False`` with no ``initial``: a stop was asked for before dockerd ran
        (a TERM during the launch), and it never will: 0 at once."""
        if initial is None and not start:
            task_status.started()
            return 0
        self._metrics.set_state(self.state.value, ready=self.state is lc.State.RUNNING)
        with self._send, self._receive:
            async with anyio.create_task_group() as tg:
                if initial is not None:
                    step = await self._adopt(tg, initial)
                else:
                    step = await self._step(tg, lc.Start())
                task_status.started()
                while step is None:
                    deadline = self._machine.deadline
                    timeout = math.inf if deadline is None else max(0.0, deadline - self._clock())
                    event: lc.Event = lc.DeadlinePassed()
                    # Only the wait is bounded: a step must never be cut in half.
                    with anyio.move_on_after(timeout):
                        event = await self._receive.receive()
                    step = await self._step(tg, event)
                finish: lc.Finish = step
                tg.cancel_scope.cancel()
        failure = self.last_failure
        if finish.permanent and failure is not None:
            raise DockerdRefusedConfiguration(
                line=failure.line, cause=failure.cause, remedy=failure.remedy
            )
        if finish.gave_up:
            raise DockerdGaveUp(
                failures=len(self._machine.crashes if finish.crashes else self._machine.failures),
                window=(self._machine.timing.crash_window if finish.crashes
                        else self._machine.timing.failure_window),
                last_error=failure.sentence() if failure else None,
                crashes=finish.crashes,
                remedy=failure.remedy if failure else None,
            )
        return finish.exit_code

    def observe_line(self, line: DockerdLine) -> None:
        """dockerd output observer: a client's failed TLS handshake, counted by reason."""
        if "TLS handshake error" not in line.message:
            return
        found = failures.client_handshake(line.message)
        if found is None:
            return
        _client, reason = found
        self.client_handshake_failures[reason] = self.client_handshake_failures.get(reason, 0) + 1
        self._metrics.tls_client_handshake_failures.labels(reason=reason).inc()

    async def _adopt(self, tg: TaskGroup, incarnation: Incarnation) -> lc.Finish | None:
        self._incarnation = max(self._incarnation, incarnation.number)
        self._current = incarnation
        self._spawned_at = self._clock() - max(0.0, self._wall() - incarnation.process.started_at)
        if incarnation.adopted:
            self._log.info("dockerd_adopted", pid=incarnation.process.pid)
        tg.start_soon(self._supervise_process, incarnation)
        return await self._step(tg, lc.Adopted())

    async def _step(self, tg: TaskGroup, event: lc.Event) -> lc.Finish | None:
        before = self._machine
        now = self._clock()
        self._machine, actions = lc.next_state(before, event, now)
        self._observe(before, event, now)
        finish: lc.Finish | None = None
        for action in actions:
            match action:
                case lc.Spawn(restart_reason=reason):
                    await self._spawn(tg, reason)
                case lc.Terminate():
                    self._log.info("dockerd_terminating", pid=self.pid, state=before.state.value)
                    if self._current is not None:
                        process = self._current.process
                        stopped = process.serves_held_sockets and await anyio.to_thread.run_sync(
                            process.stopped)
                        process.terminate(stopped=stopped)
                case lc.Kill():
                    self._log.warning("dockerd_killed", pid=self.pid, reason="deadline passed")
                    if self._current is not None:
                        self._current.process.kill_group()
                case lc.Finish():
                    finish = action
        if self._machine.state is not before.state:
            self._on_state(before.state)
        return finish

    def _observe(self, before: lc.Machine, event: lc.Event, now: float) -> None:
        m = self._machine
        match event:
            case lc.Exited(returncode=code) if before.alive:
                self.last_exit_code = None if code is None else exit_code_value(code)
                if self.last_exit_code is not None:
                    self._metrics.dockerd_last_exit_code.set(self.last_exit_code)
                asked = before.stop_requested or before.restart_reason in (
                    lc.RestartReason.TLS_ROTATION, lc.RestartReason.REQUESTED)
                if not asked:
                    self._failed(before, self._failure_at_exit, now)
                self._log.log(
                    20 if before.state is lc.State.STOPPING else 30,
                    "dockerd_exited",
                    pid=self.pid,
                    exit_code=self.last_exit_code,
                    after_seconds=round(now - self._spawned_at, 3),
                    was_ready=before.ready_since is not None,
                )
                if m.state is lc.State.BACKOFF and m.deadline is not None:
                    self._log.warning(
                        "dockerd_restart_delayed",
                        delay_seconds=round(m.deadline - now, 3),
                        failures_in_window=len(m.failures),
                        crashes_in_window=len(m.crashes),
                        reason=(m.restart_reason or lc.RestartReason.EXIT).value,
                    )
            case lc.Ready() if m.state is lc.State.RUNNING:
                if self._current is not None:
                    self._current.process.diagnosis.ready()
                seconds = now - self._spawned_at
                self._metrics.dockerd_ready_duration.observe(seconds)
                self._log.info("dockerd_ready", pid=self.pid, ready_seconds=round(seconds, 3))
            case lc.PingFailed() if m.state is lc.State.STOPPING and m.misses >= (
                m.timing.liveness_failures
            ) and before.state is lc.State.RUNNING:
                self._log.error(
                    "dockerd_unhealthy", pid=self.pid, missed_pings=m.misses,
                    remedy="dockerd stopped answering /_ping; restarting it",
                )
            case lc.DeadlinePassed() if before.state is lc.State.STARTING and (
                m.state is lc.State.STOPPING
            ):
                self._log.error(
                    "dockerd_start_timed_out", pid=self.pid,
                    start_timeout_seconds=m.timing.start_timeout,
                )
            case _:
                pass

    def _failed(self, before: lc.Machine, failure: Failure | None, now: float) -> None:
        """An exit nobody asked for: say why, as well as dockerd's lines allow."""
        self.last_failure = failure
        if before.restart_reason is lc.RestartReason.UNHEALTHY:
            silent = "dockerd stopped answering /_ping and was killed (hung)"
        elif before.restart_reason is lc.RestartReason.START_TIMEOUT:
            silent = (f"dockerd was not ready within {before.timing.start_timeout:g} s"
                      " (dockerd.start_timeout) and was stopped")
        else:
            silent = "dockerd printed no error line" + (
                " (killed by a signal)" if (self.last_exit_code or 0) > 128 else "")
        self._log.error(
            "dockerd_failed",
            pid=self.pid,
            exit_code=self.last_exit_code,
            was_ready=before.ready_since is not None,
            after_seconds=round(now - self._spawned_at, 3),
            line=failure.line if failure else None,
            cause=failure.cause if failure else silent,
            remedy=failure.remedy if failure else None,
            category=failure.category if failure else None,
            rule=failure.explanation.rule if failure and failure.explanation else None,
            final_line=failure.final_line if failure else None,
        )

    def _on_state(self, previous: lc.State) -> None:
        state = self._machine.state
        self._metrics.set_state(state.value, ready=state is lc.State.RUNNING)
        self.since = self._wall()
        self._log.debug("dockerd_state_changed", previous=previous.value, state=state.value)
        if state is lc.State.RUNNING:
            self._deliver_held()
        for listener in self.state_listeners:
            listener(state)
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def while_ready(
        self, work: Callable[[], Coroutine[Any, Any, None]], *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run ``work`` each time dockerd becomes ready, cancelled when it stops being ready."""
        task_status.started()
        while True:
            await self.wait_for_state(lc.State.RUNNING)
            async with anyio.create_task_group() as tg:
                tg.start_soon(work)
                await self.wait_for_state(*lc.NOT_READY)
                tg.cancel_scope.cancel()

    async def wait_for_state(self, *states: lc.State) -> lc.State:
        """Return as soon as dockerd is in one of ``states`` (at once if it is)."""
        while self.state not in states:
            await self._changed.wait()
        return self.state

    async def _spawn(self, tg: TaskGroup, reason: lc.RestartReason | None) -> None:
        self._incarnation += 1
        if reason is not None:
            self.restarts[reason.value] = self.restarts.get(reason.value, 0) + 1
            self._metrics.dockerd_restarts.labels(reason=reason.value).inc()
        for hook in self._before_spawn:
            await hook()
        self._spawned_at = self._clock()
        try:
            incarnation = await anyio.to_thread.run_sync(self._spawner.spawn, self._incarnation)
        except OSError as exc:
            self._current = None
            self._failure_at_exit = spawn_failure(self._config.dockerd.binary, exc)
            self._log.error("dockerd_spawn_failed", error=self._failure_at_exit.line)
            # A missing or unusable binary stays so: a configuration error (exit 2).
            self._event(lc.Exited(127, permanent=self._failure_at_exit.permanent))
            return
        self._current = incarnation
        self._metrics.dockerd_start_time.set(self._wall())
        self._log.info(
            "dockerd_started", pid=incarnation.process.pid,
            **self._spawner.describe_last(),
            restart_reason=reason.value if reason else None,
        )
        tg.start_soon(self._supervise_process, incarnation)

    async def _supervise_process(self, incarnation: Incarnation) -> None:
        exited = False
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(incarnation.notify.serve)
                tg.start_soon(incarnation.process.relay_output)
                tg.start_soon(self._readiness_then_liveness, incarnation)
                returncode = await incarnation.process.wait()
                exited = True
                # The last lines (the error that made it exit) before the exit is judged.
                # A child that inherited the pipe could keep it open: bounded.
                with anyio.move_on_after(1.0):
                    await incarnation.process.output_done.wait()
                failure = await self._diagnose(incarnation)
                self._failure_at_exit = failure
                self._event(lc.Exited(returncode, permanent=bool(failure and failure.permanent)))
                tg.cancel_scope.cancel()
        finally:
            # Cancelled while dockerd runs (the agent is ending on a bug): detached, not
            # released, so that the next agent takes it over (crash.py).
            with anyio.CancelScope(shield=True):  # closes and unlinks: not on the loop
                await anyio.to_thread.run_sync(
                    functools.partial(self._spawner.release, incarnation, exited=exited))

    async def _diagnose(self, incarnation: Incarnation) -> Failure | None:
        """What explains this exit: dockerd's lines, and a full data root seen by statvfs
        (containerd's start timeout on a full disk says nothing of the disk)."""
        try:
            figures = await anyio.to_thread.run_sync(self._disk)
        except OSError:
            figures = None
        path = self._config.dockerd.data_root
        full = full_figures(figures, path) if figures is not None else None
        return incarnation.process.diagnosis.failure(disk_full_at=full)

    async def _readiness_then_liveness(self, incarnation: Incarnation) -> None:
        await wait_ready(self._ready_check, incarnation.notify.ready)
        self._event(lc.Ready())
        liveness = self._config.liveness
        await watch_liveness(
            self._ping,
            interval=liveness.interval,
            timeout=liveness.timeout,
            on_result=self._on_ping,
            clock=self._clock,
        )

    def _on_ping(self, ok: bool, seconds: float) -> None:
        if ok:
            self._metrics.dockerd_ping_duration.observe(seconds)
            self._event(lc.PingSucceeded())
        elif self.state is lc.State.RUNNING:
            self._metrics.dockerd_ping_failures.inc()
            self._log.warning("dockerd_ping_failed", pid=self.pid, seconds=round(seconds, 3))
            self._event(lc.PingFailed())


def spawn_failure(binary: str, exc: OSError) -> Failure:
    """dockerd could not even be started (exec failed)."""
    from supervisor.dockerd.failures import Category, Explanation

    permanent = exc.errno in (errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR)
    return Failure(
        line=f"cannot run {binary}: {exc.strerror or exc}",
        explanation=Explanation(
            rule="spawn_failed",
            category=Category.CONFIG if permanent else Category.UNKNOWN,
            cause=f"the dockerd executable {binary!r} cannot be run ({exc.strerror or exc})",
            remedy=failures.INSTALL_DOCKERD,
            fatal=True,
        ),
    )
