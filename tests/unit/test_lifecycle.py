"""Tests for supervisor.dockerd.lifecycle: hand-written scenarios and random event sequences.

Time is an explicit number passed to ``next_state``: nothing sleeps, a 60 s
backoff costs nothing.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.config import load
from supervisor.dockerd.lifecycle import (
    Action,
    Adopted,
    DeadlinePassed,
    Event,
    Exited,
    Finish,
    Kill,
    Machine,
    PingFailed,
    PingSucceeded,
    Ready,
    RestartReason,
    RestartRequested,
    Spawn,
    Start,
    State,
    StopRequested,
    Terminate,
    Timing,
    backoff_delay,
    next_state,
)

pytestmark = pytest.mark.unit

TIMING = Timing(
    start_timeout=60.0,
    stop_timeout=20.0,
    kill_grace=5.0,
    backoff_initial=1.0,
    backoff_factor=2.0,
    backoff_max=30.0,
    healthy_after=10.0,
    max_failures=5,
    failure_window=120.0,
    liveness_failures=3,
)


class Driver:
    """Feeds events at explicit times and keeps the machine and the last actions."""

    def __init__(self, timing: Timing = TIMING) -> None:
        self.m = Machine(timing=timing)
        self.now = 0.0
        self.actions: list[Action] = []

    def at(self, now: float, event: Event) -> list[Action]:
        assert now >= self.now, "time must not go backwards in a test"
        self.now = now
        self.m, self.actions = next_state(self.m, event, now)
        return self.actions

    def after(self, seconds: float, event: Event) -> list[Action]:
        return self.at(self.now + seconds, event)

    def deadline(self, event: Event | None = None) -> list[Action]:
        """Jump to the machine's deadline and deliver DeadlinePassed there."""
        assert self.m.deadline is not None
        return self.at(self.m.deadline, event or DeadlinePassed())

    def started_and_ready(self, ready_after: float = 0.5) -> None:
        assert self.at(self.now, Start()) == [Spawn(None)]
        assert self.after(ready_after, Ready()) == []
        assert self.m.state is State.RUNNING


# Start and readiness ---------------------------------------------------------------


def test_first_start_spawns_without_reason() -> None:
    """Start from STOPPED spawns dockerd once, with no reason, and arms the start timeout."""
    d = Driver()
    assert d.at(100.0, Start()) == [Spawn(None)]
    assert d.m.state is State.STARTING
    assert d.m.alive
    assert d.m.deadline == 160.0


def test_start_is_ignored_once_started() -> None:
    """A second Start does not spawn a second dockerd."""
    d = Driver()
    d.at(0.0, Start())
    assert d.after(1.0, Start()) == []
    assert d.m.state is State.STARTING


def test_ready_enters_running_and_clears_deadline() -> None:
    """READY moves STARTING to RUNNING with no deadline and records when."""
    d = Driver()
    d.at(0.0, Start())
    assert d.at(0.3, Ready()) == []
    assert d.m.state is State.RUNNING
    assert d.m.deadline is None
    assert d.m.ready_since == 0.3


def test_ready_outside_starting_is_ignored() -> None:
    """A late READY (e.g. after the start timeout fired) changes nothing."""
    d = Driver()
    d.at(0.0, Start())
    d.deadline()  # start timeout: TERM
    before = d.m
    assert d.after(0.1, Ready()) == []
    assert d.m == before


# Exits and backoff ------------------------------------------------------------------


def test_exit_of_healthy_daemon_restarts_at_once() -> None:
    """A dockerd ready for healthy_after seconds that dies is respawned at once, reason EXIT."""
    d = Driver()
    d.started_and_ready()
    assert d.after(TIMING.healthy_after, Exited(-9)) == [Spawn(RestartReason.EXIT)]
    assert d.m.state is State.STARTING
    assert d.m.failures == ()
    assert d.m.last_exit == -9


def test_exit_of_young_ready_daemon_is_a_crash_with_backoff() -> None:
    """A dockerd that became ready and died before healthy_after is a crash, not a failed
    start: it waits backoff_initial, and counts against max_crashes only."""
    d = Driver()
    d.started_and_ready()
    assert d.after(2.0, Exited(1)) == []
    assert d.m.state is State.BACKOFF
    assert d.m.deadline == pytest.approx(d.now + TIMING.backoff_initial)
    assert (len(d.m.crashes), len(d.m.failures)) == (1, 0)
    assert d.m.alive is False


def test_crashes_of_a_ready_daemon_do_not_exhaust_failed_starts() -> None:
    """max_failures young crashes in a row (each ready first) do not give up: failed starts
    and crashes are counted apart."""
    d = Driver()
    d.started_and_ready()
    for _ in range(TIMING.max_failures + 1):
        assert d.after(1.0, Exited(-9)) == []  # young: backed off
        assert d.deadline() == [Spawn(RestartReason.EXIT)]
        assert d.after(0.5, Ready()) == []
    assert not d.m.finished
    assert len(d.m.crashes) == TIMING.max_failures + 1


def test_crash_loop_of_a_ready_daemon_is_bounded() -> None:
    """max_crashes deaths of a ready dockerd within crash_window give up (exit 1, crashes)."""
    timing = dataclasses.replace(TIMING, max_crashes=3, crash_window=600.0)
    d = Driver(timing)
    d.started_and_ready()
    finish: list[Action] = []
    for _ in range(3):
        finish = d.after(20.0, Exited(-9))  # served 20 s: restarted at once, still counted
        if d.m.finished:
            break
        assert finish == [Spawn(RestartReason.EXIT)]
        assert d.after(0.5, Ready()) == []
    assert finish == [Finish(1, gave_up=True, crashes=True)]
    assert d.m.state is State.FATAL


def test_crashes_older_than_the_crash_window_are_forgotten() -> None:
    """A crash every now and then over days never gives up."""
    timing = dataclasses.replace(TIMING, max_crashes=2, crash_window=60.0)
    d = Driver(timing)
    d.started_and_ready()
    for _ in range(10):
        assert d.after(3600.0, Exited(-9)) == [Spawn(RestartReason.EXIT)]
        assert d.after(0.5, Ready()) == []
    assert not d.m.finished


def test_adopted_daemon_starts_in_starting_without_spawn() -> None:
    """A dockerd already running (launched before the loop, or taken over) enters STARTING
    without a Spawn, with the start deadline, and becomes RUNNING on Ready."""
    d = Driver()
    assert d.at(0.0, Adopted()) == []
    assert (d.m.state, d.m.alive) == (State.STARTING, True)
    assert d.m.deadline == pytest.approx(TIMING.start_timeout)
    assert d.after(0.2, Ready()) == []
    assert d.m.state is State.RUNNING
    assert d.after(30.0, Exited(-9)) == [Spawn(RestartReason.EXIT)]


def test_exit_with_unknown_code_is_handled_like_any_exit() -> None:
    """An adopted dockerd whose exit status PID 1 could not report (None) still restarts."""
    d = Driver()
    d.at(0.0, Adopted())
    d.after(0.2, Ready())
    assert d.after(30.0, Exited(None)) == [Spawn(RestartReason.EXIT)]
    assert d.m.last_exit is None


def test_backoff_delays_grow_geometrically_then_cap() -> None:
    """Successive failed starts wait initial*factor^(n-1), capped at backoff_max."""
    timing = dataclasses.replace(TIMING, max_failures=100, failure_window=10_000.0)
    d = Driver(timing)
    d.at(0.0, Start())
    delays = []
    for _ in range(8):
        assert d.after(0.1, Exited(1)) == []
        assert d.m.state is State.BACKOFF
        assert d.m.deadline is not None
        delays.append(d.m.deadline - d.now)
        assert d.deadline() == [Spawn(RestartReason.EXIT)]
    assert delays == pytest.approx([1, 2, 4, 8, 16, 30, 30, 30])


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (50, 30.0)],
)
def test_backoff_delay_formula(failures: int, delay: float) -> None:
    """backoff_delay is 0 with no failures, else initial*factor^(n-1) up to the cap."""
    assert backoff_delay(TIMING, failures) == pytest.approx(delay)


def test_backoff_factor_one_is_constant() -> None:
    """With factor 1 every failure waits backoff_initial."""
    timing = dataclasses.replace(TIMING, backoff_factor=1.0, backoff_initial=3.0)
    assert [backoff_delay(timing, n) for n in (1, 2, 9)] == [3.0, 3.0, 3.0]


def test_permanent_failed_start_gives_up_at_once_with_exit_2() -> None:
    """dockerd refused its configuration: FATAL at the first failed start, Finish(2)."""
    d = Driver()
    d.at(0.0, Start())
    assert d.after(0.2, Exited(1, permanent=True)) == [Finish(2, gave_up=True, permanent=True)]
    assert d.m.state is State.FATAL


def test_permanent_is_ignored_for_a_served_dockerd_and_a_requested_stop() -> None:
    """A crash after ready is a crash (restarted); an exit after a stop request stops."""
    d = Driver()
    d.at(0.0, Start())
    d.after(0.5, Ready())
    assert d.after(60.0, Exited(1, permanent=True)) == [Spawn(RestartReason.EXIT)]
    d.after(0.5, StopRequested())
    assert d.after(0.5, Exited(1, permanent=True)) == [Finish(0)]


def test_give_up_after_max_failures_in_window() -> None:
    """The max_failures-th failed start in the window ends in FATAL and Finish(1, gave_up)."""
    d = Driver()
    d.at(0.0, Start())
    for _ in range(TIMING.max_failures - 1):
        assert d.after(0.2, Exited(1)) == []
        assert d.deadline() == [Spawn(RestartReason.EXIT)]
    assert d.after(0.2, Exited(1)) == [Finish(1, gave_up=True)]
    assert d.m.state is State.FATAL
    assert len(d.m.failures) == TIMING.max_failures


def test_failures_older_than_window_are_forgotten() -> None:
    """Failures older than failure_window do not count towards giving up or the delay."""
    d = Driver()
    d.at(0.0, Start())
    for _ in range(TIMING.max_failures - 1):
        d.after(0.2, Exited(1))
        d.deadline()
    assert len(d.m.failures) == TIMING.max_failures - 1
    # The current start lives long enough for the old failures to leave the window.
    assert d.after(TIMING.failure_window, Exited(1)) == []
    assert d.m.state is State.BACKOFF
    assert d.m.failures == (d.now,)
    assert d.m.deadline == pytest.approx(d.now + TIMING.backoff_initial)


def test_exit_ignored_when_no_process() -> None:
    """An exit reported while no dockerd is alive (e.g. in BACKOFF) changes nothing."""
    d = Driver()
    d.at(0.0, Start())
    d.after(0.1, Exited(1))
    before = d.m
    assert d.after(0.1, Exited(1)) == []
    assert d.m == before


def test_one_failure_and_max_failures_one_gives_up_at_once() -> None:
    """With max_failures=1 the first failed start is the last."""
    d = Driver(dataclasses.replace(TIMING, max_failures=1))
    d.at(0.0, Start())
    assert d.after(1.0, Exited(2)) == [Finish(1, gave_up=True)]


# Start timeout --------------------------------------------------------------------


def test_start_timeout_terminates_then_kills_after_grace() -> None:
    """No READY within start_timeout: one TERM, KILL after kill_grace, restart START_TIMEOUT."""
    d = Driver()
    d.at(0.0, Start())
    assert d.deadline() == [Terminate()]
    assert d.m.state is State.STOPPING
    assert d.m.deadline == pytest.approx(TIMING.start_timeout + TIMING.kill_grace)
    assert d.deadline() == [Kill()]
    assert d.m.deadline is None
    assert d.after(0.01, Exited(-9)) == []
    assert d.m.state is State.BACKOFF
    assert d.deadline() == [Spawn(RestartReason.START_TIMEOUT)]


def test_deadline_event_before_deadline_is_ignored() -> None:
    """DeadlinePassed delivered early (a timer firing too soon) does nothing."""
    d = Driver()
    d.at(0.0, Start())
    assert d.at(TIMING.start_timeout - 0.001, DeadlinePassed()) == []
    assert d.m.state is State.STARTING


# Liveness --------------------------------------------------------------------------


def test_k_ping_misses_terminate_with_reason_unhealthy() -> None:
    """liveness_failures misses in a row: TERM once, KILL after kill_grace, restart UNHEALTHY."""
    d = Driver()
    d.started_and_ready()
    for _ in range(TIMING.liveness_failures - 1):
        assert d.after(5.0, PingFailed()) == []
        assert d.m.state is State.RUNNING
    assert d.after(5.0, PingFailed()) == [Terminate()]
    assert d.m.state is State.STOPPING
    assert d.m.deadline == pytest.approx(d.now + TIMING.kill_grace)
    assert d.after(1.0, PingFailed()) == []  # no pings count while stopping
    assert d.deadline() == [Kill()]
    # Ready for longer than healthy_after before hanging: restarted at once.
    assert d.after(0.01, Exited(-9)) == [Spawn(RestartReason.UNHEALTHY)]


def test_ping_success_resets_misses() -> None:
    """A successful ping between misses starts the count again."""
    d = Driver()
    d.started_and_ready()
    for _ in range(5):
        for _ in range(TIMING.liveness_failures - 1):
            assert d.after(1.0, PingFailed()) == []
        assert d.after(1.0, PingSucceeded()) == []
        assert d.m.misses == 0
    assert d.m.state is State.RUNNING


def test_pings_ignored_while_starting() -> None:
    """Ping results before READY neither count nor terminate."""
    d = Driver()
    d.at(0.0, Start())
    for _ in range(10):
        assert d.after(0.1, PingFailed()) == []
    assert d.m.misses == 0
    assert d.m.state is State.STARTING


def test_young_unhealthy_daemon_counts_as_crash() -> None:
    """A dockerd that hangs before healthy_after (after being ready) is a crash and backs off."""
    d = Driver(dataclasses.replace(TIMING, liveness_failures=1))
    d.started_and_ready()
    assert d.after(1.0, PingFailed()) == [Terminate()]
    assert d.after(0.5, Exited(0)) == []
    assert d.m.state is State.BACKOFF
    assert len(d.m.crashes) == 1
    assert d.deadline() == [Spawn(RestartReason.UNHEALTHY)]


# Stop -------------------------------------------------------------------------------


def test_stop_before_start_finishes_at_once() -> None:
    """A stop request before anything was spawned exits 0 without signals."""
    d = Driver()
    assert d.at(0.0, StopRequested()) == [Finish(0)]
    assert d.m.state is State.EXITED


def test_stop_while_starting() -> None:
    """Stop during STARTING: one TERM, stop_timeout deadline, Finish(0) on exit."""
    d = Driver()
    d.at(0.0, Start())
    assert d.after(1.0, StopRequested()) == [Terminate()]
    assert d.m.deadline == pytest.approx(1.0 + TIMING.stop_timeout)
    assert d.after(0.5, Ready()) == []
    assert d.after(0.5, Exited(0)) == [Finish(0)]
    assert d.m.state is State.EXITED


def test_stop_while_running_kills_after_stop_timeout() -> None:
    """Stop during RUNNING: one TERM; KILL only once stop_timeout has passed; then Finish(0)."""
    d = Driver()
    d.started_and_ready()
    assert d.after(100.0, StopRequested()) == [Terminate()]
    stop_at = d.now
    assert d.at(stop_at + TIMING.stop_timeout - 0.01, DeadlinePassed()) == []
    assert d.at(stop_at + TIMING.stop_timeout, DeadlinePassed()) == [Kill()]
    assert d.after(0.01, Exited(-9)) == [Finish(0)]


def test_stop_while_in_backoff_finishes_at_once() -> None:
    """Stop during BACKOFF (no process) exits 0 and never spawns again."""
    d = Driver()
    d.at(0.0, Start())
    d.after(0.1, Exited(1))
    assert d.m.state is State.BACKOFF
    assert d.after(0.1, StopRequested()) == [Finish(0)]
    assert d.m.state is State.EXITED
    assert d.after(100.0, DeadlinePassed()) == []


def test_stop_while_stopping_for_restart_sends_no_second_term() -> None:
    """Stop while a restart's TERM is pending: no second TERM, the old KILL deadline kept."""
    d = Driver()
    d.started_and_ready()
    assert d.after(20.0, RestartRequested(RestartReason.TLS_ROTATION)) == [Terminate()]
    deadline = d.m.deadline
    assert d.after(1.0, StopRequested()) == []
    assert d.m.deadline == deadline
    assert d.deadline() == [Kill()]
    assert d.after(0.1, Exited(-9)) == [Finish(0)]


def test_stop_after_kill_waits_for_exit_without_signals() -> None:
    """Stop after a KILL was sent: no TERM, no second KILL, Finish(0) on the exit."""
    d = Driver()
    d.at(0.0, Start())
    d.deadline()  # TERM (start timeout)
    d.deadline()  # KILL
    assert d.after(0.1, StopRequested()) == []
    assert d.m.state is State.STOPPING
    while d.m.deadline is not None:
        assert Kill() not in d.deadline()
    assert d.after(0.1, Exited(-9)) == [Finish(0)]


def test_second_stop_request_never_sends_second_term() -> None:
    """Repeated StopRequested (TERM, then INT, then TERM again) give dockerd one TERM only."""
    d = Driver()
    d.started_and_ready()
    sent = d.after(1.0, StopRequested())
    for _ in range(5):
        sent += d.after(0.5, StopRequested())
    assert sent == [Terminate()]


def test_stop_after_stop_finished_is_ignored() -> None:
    """Once finished the machine emits nothing more, whatever arrives."""
    d = Driver()
    d.started_and_ready()
    d.after(1.0, StopRequested())
    d.after(1.0, Exited(0))
    finished = d.m
    for event in (Start(), StopRequested(), Exited(0), DeadlinePassed(), Ready()):
        assert d.after(1000.0, event) == []
    assert d.m == finished


# Requested restarts ----------------------------------------------------------------


def test_tls_rotation_restart_of_ready_daemon_is_not_a_failure() -> None:
    """A rotation restart of a ready dockerd (even a young one) respawns at once, no failure."""
    d = Driver()
    d.started_and_ready()
    assert d.after(1.0, RestartRequested(RestartReason.TLS_ROTATION)) == [Terminate()]
    assert d.after(0.5, Exited(0)) == [Spawn(RestartReason.TLS_ROTATION)]
    assert d.m.failures == ()


def test_restart_requested_while_starting_is_queued_until_ready() -> None:
    """A restart asked for during STARTING waits for READY, then TERMs with that reason."""
    d = Driver()
    d.at(0.0, Start())
    assert d.after(0.1, RestartRequested(RestartReason.TLS_ROTATION)) == []
    assert d.m.state is State.STARTING
    assert d.after(0.2, Ready()) == [Terminate()]
    assert d.m.queued_restart is None
    assert d.after(0.5, Exited(0)) == [Spawn(RestartReason.TLS_ROTATION)]
    assert d.m.failures == ()


def test_restart_requested_while_stopping_or_backoff_is_ignored() -> None:
    """A restart request without a ready or starting dockerd adds nothing."""
    d = Driver()
    d.at(0.0, Start())
    d.after(0.1, Exited(1))  # BACKOFF
    assert d.after(0.1, RestartRequested(RestartReason.REQUESTED)) == []
    d.deadline()  # spawn
    d.after(0.1, Ready())
    d.after(0.1, StopRequested())
    assert d.after(0.1, RestartRequested(RestartReason.REQUESTED)) == []
    assert d.after(0.1, Exited(0)) == [Finish(0)]


def test_timing_from_config() -> None:
    """Timing takes every number from the configuration sections."""
    cfg = load(
        env={
            "DIND_SUPERVISOR_DOCKERD_START_TIMEOUT": "7s",
            "DIND_SUPERVISOR_LIVENESS_KILL_GRACE": "2s",
            "DIND_SUPERVISOR_RESTART_MAX_FAILURES": "9",
            "DIND_SUPERVISOR_LIVENESS_FAILURES": "4",
        }
    )
    timing = Timing.from_config(cfg)
    assert timing.start_timeout == 7.0
    assert timing.kill_grace == 2.0
    assert timing.max_failures == 9
    assert timing.liveness_failures == 4
    assert timing.stop_timeout == cfg.dockerd.stop_timeout


def test_queued_restart_dropped_when_that_process_dies() -> None:
    """A restart queued for a starting dockerd that dies is not applied to its successor."""
    d = Driver()
    d.at(0.0, Start())
    d.after(0.1, RestartRequested(RestartReason.TLS_ROTATION))
    d.after(0.1, Exited(1))  # died before READY: its successor starts fresh anyway
    assert d.deadline() == [Spawn(RestartReason.EXIT)]
    assert d.after(0.2, Ready()) == []
    assert d.m.state is State.RUNNING


# Random event sequences ------------------------------------------------------------

# Weighted by repetition: a stop request ends the story, so it comes rarely;
# exits are frequent enough to exercise backoff and giving up.
EVENT_CHOICES: list[Event] = [
    *[Ready()] * 4,
    *[PingFailed()] * 5,
    *[PingSucceeded()] * 2,
    *[DeadlinePassed()] * 5,
    *[Exited(code) for code in (0, 1, 2, -9, -15, None)],
    *[RestartRequested(reason) for reason in RestartReason],
    Start(),
    StopRequested(),
]
# How far time moves before the event; "deadline" jumps to the machine's deadline.
ADVANCE_CHOICES: list[float | str] = [
    *(0.0, 0.01, 0.5, 3.0, 11.0, 70.0, 200.0),
    *["deadline"] * 2,
]
# One draw per step (event and time together) keeps a long run cheap to generate.
STEPS = st.sampled_from([(e, a) for e in EVENT_CHOICES for a in ADVANCE_CHOICES])
TIMINGS = st.builds(
    Timing,
    start_timeout=st.sampled_from([1.0, 60.0]),
    stop_timeout=st.sampled_from([0.5, 20.0]),
    kill_grace=st.sampled_from([0.5, 5.0]),
    backoff_initial=st.sampled_from([0.0, 1.0]),
    backoff_factor=st.sampled_from([1.0, 2.0]),
    backoff_max=st.sampled_from([1.0, 30.0]),
    healthy_after=st.sampled_from([0.0, 10.0]),
    max_failures=st.integers(1, 8),
    failure_window=st.sampled_from([5.0, 120.0]),
    max_crashes=st.integers(1, 8),
    crash_window=st.sampled_from([5.0, 600.0]),
    liveness_failures=st.integers(1, 4),
)


class Model:
    """What the outside world knows, built only from the actions the machine emitted."""

    def __init__(self) -> None:
        self.alive = False
        self.terms = 0  # TERMs sent to the current process
        self.killed = False
        self.finished: Finish | None = None
        self.stop_requested = False


def check_step(
    model: Model, m: Machine, event: Event, actions: list[Action], *, was_alive: bool
) -> None:
    """Check one step's actions against the model, then update the model."""
    if model.finished is not None:
        assert actions == [], "nothing may follow Finish"
        return
    for action in actions:
        match action:
            case Spawn():
                assert not model.alive, "Spawn while a dockerd is alive"
                assert not model.stop_requested, "Spawn after a stop request"
                model.alive, model.terms, model.killed = True, 0, False
            case Terminate():
                assert model.alive, "Terminate without a process"
                model.terms += 1
                assert model.terms == 1, "second TERM for one process"
            case Kill():
                assert model.alive, "Kill without a process"
                assert model.terms == 1, "Kill before Terminate"
                assert not model.killed, "second KILL for one process"
                model.killed = True
            case Finish():
                assert not model.alive, "Finish while dockerd is alive"
                model.finished = action
    assert len([a for a in actions if isinstance(a, Spawn | Finish)]) <= 1
    if model.stop_requested and (isinstance(event, Exited) or not was_alive):
        assert model.finished == Finish(0), "a requested stop ends in Finish(0) once dockerd exits"
    # Invariants of the machine itself.
    assert m.alive == model.alive
    if m.state in (State.STARTING, State.BACKOFF):
        assert m.deadline is not None, f"{m.state} without deadline"
    if m.state is State.STOPPING and not m.killed:
        assert m.deadline is not None, "STOPPING without deadline before KILL"
    assert len(m.failures) <= m.timing.max_failures
    assert len(m.crashes) <= m.timing.max_crashes
    assert m.finished == (model.finished is not None)


def advance_time(now: float, advance: float | str, m: Machine) -> float:
    if advance == "deadline":
        return max(now, m.deadline) if m.deadline is not None else now
    assert isinstance(advance, float)
    return now + advance


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timing=TIMINGS, data=st.data())
def test_random_sequences_keep_invariants(timing: Timing, data: st.DataObject) -> None:
    """Any event sequence at increasing times keeps the lifecycle's safety rules."""
    m = Machine(timing=timing)
    model = Model()
    now = 0.0
    # The first dockerd is spawned by the machine, or already running (Adopted).
    event: Event = data.draw(st.sampled_from([Start(), Adopted()]))
    after_finish = 0
    for _ in range(80):
        was_alive = model.alive
        if isinstance(event, Exited) and not was_alive:
            before = m
            m, actions = next_state(m, event, now)
            assert (m, actions) == (before, []), "an exit without a process changed something"
        else:
            if isinstance(event, StopRequested) and model.finished is None:
                model.stop_requested = True
            stopped = m.state is State.STOPPED
            m, actions = next_state(m, event, now)
            if isinstance(event, Exited):
                model.alive = False  # the world: that process is gone
            if isinstance(event, Adopted) and stopped:
                model.alive = True  # the world: that process was running already
            check_step(model, m, event, actions, was_alive=was_alive)
        if model.finished is not None:
            after_finish += 1
            if after_finish > 3:
                break
        event, advance = data.draw(STEPS)
        now = advance_time(now, advance, m)


@settings(max_examples=100, deadline=None)
@given(timing=TIMINGS, steps=st.lists(STEPS, max_size=40), at_step=st.integers(0, 40))
def test_stop_request_always_finishes_zero(
    timing: Timing, steps: list[tuple[Event, float | str]], at_step: int
) -> None:
    """After a stop request, deadlines and the exit they force always reach Finish(0)."""
    m = Machine(timing=timing)
    now = 0.0
    alive = False
    for event, advance in steps[:at_step]:
        now = advance_time(now, advance, m)
        if isinstance(event, Exited) and not alive:
            continue
        m, actions = next_state(m, event, now)
        if isinstance(event, Exited):
            alive = False
        alive = alive or any(isinstance(a, Spawn) for a in actions)
        if m.finished:
            return  # gave up before the stop request: a different ending
    m, actions = next_state(m, StopRequested(), now)
    finish = [a for a in actions if isinstance(a, Finish)]
    # Follow the deadlines as the daemon driver would; KILL makes the process exit.
    for _ in range(5):
        if finish:
            break
        assert alive
        if any(isinstance(a, Kill) for a in actions) or m.deadline is None:
            m, actions = next_state(m, Exited(-9), now)
        else:
            now = m.deadline
            m, actions = next_state(m, DeadlinePassed(), now)
        assert not any(isinstance(a, Spawn) for a in actions)
        finish = [a for a in actions if isinstance(a, Finish)]
    assert finish == [Finish(0)]
    assert m.state is State.EXITED
