"""The dockerd component: carries out what the lifecycle decides, across restarts.

``Daemon.run`` feeds events (exit, READY=1 confirmed by /_ping, ping results,
deadlines, stop and restart requests) into ``lifecycle.next_state`` and
performs the actions it returns: spawn, one TERM, KILL of the group, finish.
Each dockerd process lives in its own cancel scope together with its output
relay, its notify listener, and its readiness and liveness tasks, so nothing
of an old process outlives it.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from supervisor.config import Config
from supervisor.dockerd import lifecycle as lc
from supervisor.dockerd.health import Ping, wait_ready, watch_liveness
from supervisor.dockerd.process import DockerdProcess, LineObserver
from supervisor.errors import DockerdGaveUp
from supervisor.logs import get_logger
from supervisor.metrics import Metrics, exit_code_value
from supervisor.notify import NotifyListener

Hook = Callable[[], Awaitable[None]]
StateListener = Callable[[lc.State], None]


class Daemon:
    """Owns one dockerd at a time, from the first start to the final stop."""

    def __init__(
        self,
        *,
        config: Config,
        metrics: Metrics,
        ping: Ping,
        argv: Callable[[], Sequence[str]],
        env: Callable[[], Mapping[str, str]],
        before_spawn: Sequence[Hook] = (),
        observers: Sequence[LineObserver] = (),
        pass_fds: Callable[[], Sequence[int]] = tuple,
        wrap: Callable[[Sequence[str], Mapping[str, str]], Sequence[str]] | None = None,
        ready_check: Ping | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._ping = ping
        self._argv = argv
        self._env = env
        self._before_spawn = list(before_spawn)
        self._observers = list(observers)
        self._pass_fds = pass_fds
        # The exec wrapper (resource policy) goes in front of the argv we log.
        self._wrap = wrap
        # Readiness may ask more than liveness (e.g. the TLS listener is open too).
        self._ready_check = ready_check or ping
        self._clock = clock
        self._wall = wall_clock
        self._log = get_logger(component="dockerd")
        self._machine = lc.Machine(timing=lc.Timing.from_config(config))
        self._send, self._receive = anyio.create_memory_object_stream[lc.Event](math.inf)
        self._process: DockerdProcess | None = None
        self._incarnation = 0
        self._spawned_at = 0.0
        self.state_listeners: list[StateListener] = []
        self._changed = anyio.Event()  # set and replaced at every state change
        self.since = wall_clock()
        self.restarts: dict[str, int] = {}
        self.last_exit_code: int | None = None
        self.last_error_line: str | None = None

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
        return self._process.pid if self._process is not None else None

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "ready": self.state is lc.State.RUNNING,
            "pid": self.pid,
            "since": self.since,
            "restarts": dict(self.restarts),
            "last_exit_code": self.last_exit_code,
            "last_error": self.last_error_line,
        }

    # Requests -------------------------------------------------------------

    def request_stop(self) -> None:
        self._send.send_nowait(lc.StopRequested())

    def request_restart(self, reason: lc.RestartReason) -> None:
        self._send.send_nowait(lc.RestartRequested(reason))

    def forward_signal(self, signum: int) -> None:
        if self._process is not None and self._machine.alive:
            self._log.info("signal_forwarded", signal=signal.Signals(signum).name, pid=self.pid)
            self._process.send_signal(signum)

    # The loop -------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> int:
        """Run until stopped (returns 0) or given up (raises DockerdGaveUp)."""
        self._metrics.set_state(self.state)
        async with anyio.create_task_group() as tg:
            task_status.started()
            step = await self._step(tg, lc.Start())
            while step is None:
                event: lc.Event
                deadline = self._machine.deadline
                timeout = math.inf if deadline is None else max(0.0, deadline - self._clock())
                event = lc.DeadlinePassed()
                # Only the wait is bounded: a step must never be cut in half.
                with anyio.move_on_after(timeout):
                    event = await self._receive.receive()
                step = await self._step(tg, event)
            finish: lc.Finish = step
            tg.cancel_scope.cancel()
        if finish.gave_up:
            raise DockerdGaveUp(
                failures=len(self._machine.failures),
                window=self._machine.timing.failure_window,
                last_error=self.last_error_line,
            )
        return finish.exit_code

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
                    if self._process is not None:
                        self._process.terminate()
                case lc.Kill():
                    self._log.warning("dockerd_killed", pid=self.pid, reason="deadline passed")
                    if self._process is not None:
                        self._process.kill_group()
                case lc.Finish():
                    finish = action
        if self._machine.state is not before.state:
            self._on_state(before.state)
        return finish

    def _observe(self, before: lc.Machine, event: lc.Event, now: float) -> None:
        m = self._machine
        match event:
            case lc.Exited(returncode=code) if before.alive:
                self.last_exit_code = exit_code_value(code)
                self._metrics.dockerd_last_exit_code.set(self.last_exit_code)
                if self._process is not None and self._process.last_error_line:
                    self.last_error_line = self._process.last_error_line
                self._log.log(
                    20 if before.state is lc.State.STOPPING else 30,
                    "dockerd_exited",
                    pid=self.pid,
                    exit_code=self.last_exit_code,
                    after_seconds=round(now - self._spawned_at, 3),
                )
                if m.state is lc.State.BACKOFF and m.deadline is not None:
                    self._log.warning(
                        "dockerd_restart_delayed",
                        delay_seconds=round(m.deadline - now, 3),
                        failures_in_window=len(m.failures),
                        reason=(m.restart_reason or lc.RestartReason.EXIT).value,
                    )
            case lc.Ready() if m.state is lc.State.RUNNING:
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

    def _on_state(self, previous: lc.State) -> None:
        state = self._machine.state
        self._metrics.set_state(state)
        self.since = self._wall()
        self._log.debug("dockerd_state_changed", previous=previous.value, state=state.value)
        for listener in self.state_listeners:
            listener(state)
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

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
        argv = list(self._argv())
        path = Path(self._config.agent.state_dir) / f"notify-{self._incarnation}.sock"
        listener = NotifyListener(path)
        await listener.__aenter__()
        env = {**self._env(), "NOTIFY_SOCKET": str(path)}
        command = list(self._wrap(argv, env)) if self._wrap else argv
        self._spawned_at = self._clock()
        try:
            process = await DockerdProcess.spawn(
                command, env=env, observers=self._observers, pass_fds=self._pass_fds()
            )
        except OSError as exc:
            await listener.__aexit__(None, None, None)
            self._process = None
            self.last_error_line = f"cannot run {argv[0]}: {exc.strerror or exc}"
            self._log.error("dockerd_spawn_failed", argv=argv, error=self.last_error_line)
            self._send.send_nowait(lc.Exited(127))
            return
        self._process = process
        self._metrics.dockerd_start_time.set(self._wall())
        self._log.info(
            "dockerd_started", pid=process.pid, argv=argv, wrapped=command != argv,
            restart_reason=reason.value if reason else None,
        )
        tg.start_soon(self._supervise_process, process, listener)

    async def _supervise_process(self, process: DockerdProcess, listener: NotifyListener) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(listener.serve)
                tg.start_soon(process.relay_output)
                tg.start_soon(self._readiness_then_liveness, listener)
                returncode = await process.wait()
                self._send.send_nowait(lc.Exited(returncode))
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await listener.__aexit__(None, None, None)

    async def _readiness_then_liveness(self, listener: NotifyListener) -> None:
        await wait_ready(self._ready_check, listener.ready)
        self._send.send_nowait(lc.Ready())
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
            self._send.send_nowait(lc.PingSucceeded())
        elif self.state is lc.State.RUNNING:
            self._metrics.dockerd_ping_failures.inc()
            self._log.warning("dockerd_ping_failed", pid=self.pid, seconds=round(seconds, 3))
            self._send.send_nowait(lc.PingFailed())
