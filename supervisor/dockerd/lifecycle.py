"""The dockerd lifecycle as a pure state machine: states, events, actions, backoff.

``next_state(machine, event, now)`` is the only place that decides when
dockerd is started, stopped, killed, restarted or given up on. It performs no
I/O and reads no clock, so tests drive it exhaustively. ``daemon.py`` feeds it
events and carries out the actions it returns.

Rules worth knowing:
- dockerd gets at most one TERM per process: a 4th TERM makes it force-quit
  without cleanup, and we never need a second one; KILL follows a deadline.
- A dockerd that never became ready and exited (or missed its start
  deadline) is a failed start: the next start waits an exponential backoff,
  and ``max_failures`` of them within ``failure_window`` end the agent
  (supervisord's startsecs/startretries, systemd's StartLimitBurst).
- A dockerd that became ready and later died (or hung) is a crash, not a
  failed start: restarted at once when it had served ``healthy_after``
  seconds, after a backoff counted in crashes otherwise; ``max_crashes``
  within ``crash_window`` still end the agent, so a crash loop is bounded.
- A failed start whose cause no restart can change (dockerd refused its
  flags or daemon.json: ``Exited(permanent=True)``) ends the agent at once
  with exit 2, a configuration error, instead of ``max_failures`` attempts.
- Restarts the agent asks for (certificate rotation) count as neither.
- A dockerd already running when the machine starts (spawned before the
  event loop existed, or left by a previous agent) enters with ``Adopted``:
  STARTING without a spawn, ready once it answers.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from supervisor.config import Config


class State(enum.StrEnum):
    STOPPED = "stopped"  # nothing started yet
    STARTING = "starting"  # spawned, not ready
    RUNNING = "running"  # ready and answering pings
    BACKOFF = "backoff"  # waiting before the next start
    STOPPING = "stopping"  # TERM sent; waiting for the exit (to stop or to restart)
    EXITED = "exited"  # stopped on request: the agent exits 0
    FATAL = "fatal"  # gave up: the agent exits 1


NOT_READY = (State.STOPPED, State.STARTING, State.BACKOFF, State.STOPPING, State.EXITED,
             State.FATAL)


class RestartReason(enum.StrEnum):
    EXIT = "exit"
    UNHEALTHY = "unhealthy"
    START_TIMEOUT = "start_timeout"
    TLS_ROTATION = "tls_rotation"
    REQUESTED = "requested"


# Events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    pass


@dataclass(frozen=True, slots=True)
class Adopted:
    """A dockerd process exists already; supervise it from STARTING."""


@dataclass(frozen=True, slots=True)
class Ready:
    pass


@dataclass(frozen=True, slots=True)
class Exited:
    # Negative: killed by that signal (asyncio's convention); None: not known (an
    # adopted dockerd whose status PID 1 reaped and could not report).
    returncode: int | None
    # dockerd said why, and no restart changes it (its flags or daemon.json).
    permanent: bool = False


@dataclass(frozen=True, slots=True)
class PingSucceeded:
    pass


@dataclass(frozen=True, slots=True)
class PingFailed:
    pass


@dataclass(frozen=True, slots=True)
class DeadlinePassed:
    pass


@dataclass(frozen=True, slots=True)
class StopRequested:
    pass


@dataclass(frozen=True, slots=True)
class RestartRequested:
    reason: RestartReason


Event = (
    Start | Adopted | Ready | Exited | PingSucceeded | PingFailed | DeadlinePassed
    | StopRequested | RestartRequested
)


# Actions ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spawn:
    restart_reason: RestartReason | None  # None for the first start


@dataclass(frozen=True, slots=True)
class Terminate:
    pass


@dataclass(frozen=True, slots=True)
class Kill:
    pass


@dataclass(frozen=True, slots=True)
class Finish:
    exit_code: int
    gave_up: bool = False
    crashes: bool = False  # gave up on crashes of a served daemon, not on failed starts
    permanent: bool = False  # gave up at once: dockerd refused its configuration


Action = Spawn | Terminate | Kill | Finish


@dataclass(frozen=True, slots=True, kw_only=True)
class Timing:
    """Every number the machine needs, taken from configuration once."""

    start_timeout: float = 60.0
    stop_timeout: float = 20.0
    kill_grace: float = 5.0
    backoff_initial: float = 1.0
    backoff_factor: float = 2.0
    backoff_max: float = 30.0
    healthy_after: float = 10.0
    max_failures: int = 5
    failure_window: float = 120.0
    max_crashes: int = 10
    crash_window: float = 600.0
    liveness_failures: int = 3

    @classmethod
    def from_config(cls, config: Config) -> Timing:
        return cls(
            start_timeout=config.dockerd.start_timeout,
            stop_timeout=config.dockerd.stop_timeout,
            kill_grace=config.liveness.kill_grace,
            backoff_initial=config.restart.backoff_initial,
            backoff_factor=config.restart.backoff_factor,
            backoff_max=config.restart.backoff_max,
            healthy_after=config.restart.healthy_after,
            max_failures=config.restart.max_failures,
            failure_window=config.restart.failure_window,
            max_crashes=config.restart.max_crashes,
            crash_window=config.restart.crash_window,
            liveness_failures=config.liveness.failures,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Machine:
    timing: Timing
    state: State = State.STOPPED
    deadline: float | None = None
    alive: bool = False  # a dockerd process exists (spawned, exit not yet seen)
    terminated: bool = False  # this process got its one TERM
    killed: bool = False
    stop_requested: bool = False
    restart_reason: RestartReason | None = None  # why the next start happens
    queued_restart: RestartReason | None = None  # asked while starting
    ready_since: float | None = None
    misses: int = 0
    failures: tuple[float, ...] = ()  # times of failed starts inside the window
    crashes: tuple[float, ...] = ()  # times a served dockerd died, inside the crash window
    last_exit: int | None = None

    @property
    def finished(self) -> bool:
        return self.state in (State.EXITED, State.FATAL)


_DELIBERATE = frozenset({RestartReason.TLS_ROTATION, RestartReason.REQUESTED})


def backoff_delay(timing: Timing, failures: int) -> float:
    """Delay before the next start after ``failures`` failed starts in the window."""
    if failures <= 0:
        return 0.0
    delay = timing.backoff_initial * timing.backoff_factor ** (failures - 1)
    return min(delay, timing.backoff_max)


def _spawn(m: Machine, now: float, reason: RestartReason | None) -> tuple[Machine, list[Action]]:
    m = dataclasses.replace(
        m,
        state=State.STARTING,
        deadline=now + m.timing.start_timeout,
        alive=True,
        terminated=False,
        killed=False,
        restart_reason=None,
        ready_since=None,
        misses=0,
    )
    return m, [Spawn(reason)]


def _terminate(m: Machine, now: float, grace: float, **changes: object) -> tuple[
    Machine, list[Action]
]:
    actions: list[Action] = [] if m.terminated else [Terminate()]
    deadline = m.deadline if m.terminated and m.deadline is not None else now + grace
    m = dataclasses.replace(m, state=State.STOPPING, terminated=True, deadline=deadline)
    return dataclasses.replace(m, **changes), actions  # type: ignore[arg-type]


def _after_exit(m: Machine, event: Exited, now: float) -> tuple[Machine, list[Action]]:
    """dockerd is gone: stop, restart at once, back off, or give up."""
    # A restart queued while this process was starting has happened by itself.
    m = dataclasses.replace(
        m, alive=False, last_exit=event.returncode, deadline=None, queued_restart=None
    )
    if m.stop_requested:
        return dataclasses.replace(m, state=State.EXITED), [Finish(0)]
    reason = m.restart_reason or RestartReason.EXIT
    ready_since = m.ready_since
    m = dataclasses.replace(m, ready_since=None)
    if ready_since is not None and reason in _DELIBERATE:
        # A restart we asked for (rotation) of a serving daemon is neither.
        return _spawn(m, now, reason)
    if ready_since is not None:
        crashes = (*(t for t in m.crashes if now - t < m.timing.crash_window), now)
        m = dataclasses.replace(m, crashes=crashes)
        if len(crashes) >= m.timing.max_crashes:
            return dataclasses.replace(m, state=State.FATAL), [
                Finish(1, gave_up=True, crashes=True)
            ]
        served = now - ready_since >= m.timing.healthy_after
        delay = 0.0 if served else backoff_delay(m.timing, len(crashes))
    else:
        failures = (*(t for t in m.failures if now - t < m.timing.failure_window), now)
        m = dataclasses.replace(m, failures=failures)
        if event.permanent:
            return dataclasses.replace(m, state=State.FATAL), [
                Finish(2, gave_up=True, permanent=True)
            ]
        if len(failures) >= m.timing.max_failures:
            return dataclasses.replace(m, state=State.FATAL), [Finish(1, gave_up=True)]
        delay = backoff_delay(m.timing, len(failures))
    if delay <= 0:
        return _spawn(m, now, reason)
    return dataclasses.replace(
        m, state=State.BACKOFF, deadline=now + delay, restart_reason=reason
    ), []


def next_state(m: Machine, event: Event, now: float) -> tuple[Machine, list[Action]]:
    """The whole lifecycle: given the machine and one event, the next machine and actions."""
    if m.finished:
        return m, []
    match event:
        case Start() if m.state is State.STOPPED:
            return _spawn(m, now, None)
        case Adopted() if m.state is State.STOPPED:
            return dataclasses.replace(
                m, state=State.STARTING, deadline=now + m.timing.start_timeout, alive=True,
                terminated=False, killed=False, ready_since=None, misses=0,
            ), []
        case StopRequested():
            if m.stop_requested:
                return m, []
            if not m.alive:
                return dataclasses.replace(m, state=State.EXITED, deadline=None), [Finish(0)]
            return _terminate(m, now, m.timing.stop_timeout, stop_requested=True)
        case Exited() if m.alive:
            return _after_exit(m, event, now)
        case Ready() if m.state is State.STARTING:
            m = dataclasses.replace(
                m, state=State.RUNNING, deadline=None, ready_since=now, misses=0
            )
            if m.queued_restart is not None:
                reason = m.queued_restart
                return _terminate(
                    m, now, m.timing.stop_timeout, restart_reason=reason, queued_restart=None
                )
            return m, []
        case PingSucceeded() if m.state is State.RUNNING:
            return dataclasses.replace(m, misses=0), []
        case PingFailed() if m.state is State.RUNNING:
            misses = m.misses + 1
            if misses < m.timing.liveness_failures:
                return dataclasses.replace(m, misses=misses), []
            return _terminate(
                m, now, m.timing.kill_grace, misses=misses, restart_reason=RestartReason.UNHEALTHY
            )
        case RestartRequested(reason=reason):
            if m.state is State.RUNNING:
                return _terminate(m, now, m.timing.stop_timeout, restart_reason=reason)
            if m.state is State.STARTING:
                return dataclasses.replace(m, queued_restart=reason), []
            return m, []
        case DeadlinePassed() if m.deadline is not None and now >= m.deadline:
            return _on_deadline(m, now)
    return m, []


def _on_deadline(m: Machine, now: float) -> tuple[Machine, list[Action]]:
    if m.state is State.BACKOFF:
        return _spawn(m, now, m.restart_reason)
    if m.state is State.STARTING:
        return _terminate(
            m, now, m.timing.kill_grace, restart_reason=RestartReason.START_TIMEOUT
        )
    if m.state is State.STOPPING and not m.killed:
        # Nothing more to escalate after KILL: the exit follows at once.
        return dataclasses.replace(m, killed=True, deadline=None), [Kill()]
    return dataclasses.replace(m, deadline=None), []
