"""Tests for supervisor.dockerd.daemon: the Daemon carrying out the lifecycle, with a fake dockerd
process and an event loop whose clock jumps (a 60 s backoff or a 15 s hang take milliseconds)."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from supervisor.config import load
from supervisor.dataroot.disk import DiskFigures
from supervisor.docker_api import DockerApiError
from supervisor.dockerd import lifecycle as lc
from supervisor.dockerd.daemon import Daemon
from supervisor.dockerd.diagnosis import Diagnosis
from supervisor.dockerd.spawner import Incarnation
from supervisor.errors import DockerdGaveUp, DockerdRefusedConfiguration, SupervisorError
from supervisor.logs import parse_dockerd_line
from supervisor.metrics import Metrics
from tests.unit.virtual_time import run_virtual

pytestmark = pytest.mark.unit


class FakeNotify:
    def __init__(self) -> None:
        self.ready = anyio.Event()

    async def serve(self) -> None:
        await anyio.sleep_forever()

    def close(self) -> None:
        pass


@dataclass
class FakeDockerd:
    """A dockerd as the Daemon sees it: it answers pings once ready, exits when told."""

    pid: int
    ready_after: float | None = 0.5  # None: never becomes ready
    exits_on_term: bool = True
    hung: bool = False
    terms: int = 0
    kills: int = 0
    signals: list[int] = field(default_factory=list)
    diagnosis: Diagnosis = field(default_factory=Diagnosis)
    started_at: float = 0.0
    code: int | None = None
    _exit: anyio.Event = field(default_factory=anyio.Event)
    output_done: anyio.Event = field(default_factory=anyio.Event)
    answering: bool = False
    serves_held_sockets: bool = False  # the hung-and-stopped case is test_process_stop's

    def say(self, *lines: str) -> None:
        """Lines as dockerd prints them, read as the relay reads them."""
        for line in lines:
            self.diagnosis.add(parse_dockerd_line(line), line)

    def exit(self, code: int | None) -> None:
        if not self._exit.is_set():
            self.code = code
            self.answering = False
            self._exit.set()
            self.output_done.set()

    async def relay_output(self) -> None:
        if self.ready_after is not None:
            await anyio.sleep(self.ready_after)
            self.answering = not self._exit.is_set()
        await self._exit.wait()

    async def wait(self) -> int | None:
        await self._exit.wait()
        return self.code

    def terminate(self, *, stopped: bool = False) -> None:
        self.terms += 1
        if self.exits_on_term and not self.hung:
            self.exit(0)

    def kill_group(self) -> None:
        self.kills += 1
        self.exit(-9)

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)

    def close(self) -> None:
        pass


class FakeSpawner:
    def __init__(self, make: Callable[[int], FakeDockerd] | None = None) -> None:
        self.processes: list[FakeDockerd] = []
        self.released: list[int] = []
        self.decided_at: list[float] = []
        self.detached: list[int] = []
        self._make = make or (lambda pid: FakeDockerd(pid=pid))

    def describe_last(self) -> dict[str, Any]:
        return {"argv": ["dockerd"]}

    def spawn(self, number: int) -> Incarnation:
        process = self._make(100 + number)
        # The Daemon spawns from a worker thread; the loop's (virtual) clock says when.
        process.started_at = anyio.from_thread.run_sync(anyio.current_time)
        self.processes.append(process)
        return Incarnation(number=number, process=process, notify=FakeNotify())  # type: ignore[arg-type]

    def release(self, incarnation: Incarnation, *, exited: bool = True) -> None:
        self.released.append(incarnation.process.pid)
        if not exited:
            self.detached.append(incarnation.process.pid)

    @property
    def current(self) -> FakeDockerd:
        return self.processes[-1]


ROOMY = DiskFigures(size_bytes=10 * 2**30, free_bytes=5 * 2**30, inodes=10**6,
                    free_inodes=5 * 10**5, used_fraction=0.5)


def daemon_for(spawner: FakeSpawner, *flags: str, disk: DiskFigures = ROOMY, **env: str
               ) -> Daemon:
    config = load(env={f"DIND_SUPERVISOR_{k}": v for k, v in env.items()},
                  dockerd_args=flags or ())

    async def ping() -> None:
        if not spawner.processes or not spawner.current.answering or spawner.current.hung:
            raise DockerApiError("no answer")

    async def spawning() -> None:
        # When the Daemon decides to spawn, on the loop's clock: the spawn itself runs in
        # a worker thread, during which the virtual clock may jump ahead.
        spawner.decided_at.append(anyio.current_time())

    return Daemon(config=config, metrics=Metrics(), spawner=spawner, ping=ping,
                  before_spawn=[spawning], disk=lambda: disk)


async def until(
    predicate: Callable[[], bool], *, within: float = 600.0, step: float = 0.25
) -> None:
    """Wait (in virtual time, checking every ``step``) until ``predicate`` holds."""
    with anyio.fail_after(within):
        # Polling a fake's state costs almost nothing: the loop's clock jumps.
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(step)


def scenario(body: Callable[[Daemon, FakeSpawner, Any], Awaitable[None]],
             spawner: FakeSpawner, daemon: Daemon) -> Any:
    async def main() -> Any:
        result: dict[str, Any] = {}
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                try:
                    result["code"] = await daemon.run()
                except SupervisorError as exc:  # gave up, or refused its configuration
                    result["gave_up"] = exc

            await tg.start(_started, run)
            await body(daemon, spawner, result)
            await until(lambda: "code" in result or "gave_up" in result, within=3600)
        return result

    return run_virtual(main)


async def _started(run: Callable[[], Awaitable[None]], *,
                   task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    await run()


def test_a_failed_start_waits_its_backoff_in_virtual_time() -> None:
    """A dockerd that never gets ready and exits: the next start waits backoff_initial (60 s
    here), checked on the loop's clock, and max_failures of them give up naming them."""
    spawner = FakeSpawner(lambda pid: FakeDockerd(pid=pid, ready_after=None))
    daemon = daemon_for(spawner, RESTART_BACKOFF_INITIAL="60s", RESTART_BACKOFF_MAX="60s",
                        RESTART_MAX_FAILURES="2", RESTART_FAILURE_WINDOW="10m")

    exited_at: list[float] = []

    async def body(daemon: Daemon, spawner: FakeSpawner, result: dict[str, Any]) -> None:
        for count in (1, 2):
            await until(lambda count=count: len(spawner.processes) == count)  # type: ignore[misc]
            exited_at.append(anyio.current_time())
            spawner.current.exit(1)

    result = scenario(body, spawner, daemon)
    # From the first failure to the decision to start again: the backoff, to the tick.
    assert spawner.decided_at[1] - exited_at[0] == pytest.approx(60.0, abs=0.01)
    assert isinstance(result["gave_up"], DockerdGaveUp)
    assert "failed to start 2 times" in result["gave_up"].message
    assert spawner.released == [101, 102]


def test_a_hang_is_detected_by_missed_pings_and_dockerd_replaced() -> None:
    """A running dockerd that stops answering: after `failures` missed pings it gets its one
    TERM; hung, it ignores it, so KILL follows kill_grace later; a new one starts (unhealthy)."""
    spawner = FakeSpawner()
    daemon = daemon_for(spawner, LIVENESS_INTERVAL="5s", LIVENESS_TIMEOUT="3s",
                        LIVENESS_FAILURES="3", LIVENESS_KILL_GRACE="5s")
    marks: dict[str, float] = {}

    async def body(daemon: Daemon, spawner: FakeSpawner, result: dict[str, Any]) -> None:
        await daemon.wait_for_state(lc.State.RUNNING)
        first = spawner.current
        first.hung = True
        marks["hung"] = anyio.current_time()
        await until(lambda: first.kills == 1)
        marks["killed"] = anyio.current_time()
        await until(lambda: len(spawner.processes) == 2 and daemon.state is lc.State.RUNNING)
        assert (first.terms, first.kills) == (1, 1)
        daemon.request_stop()

    with capture_logs() as logs:
        result = scenario(body, spawner, daemon)
    assert result == {"code": 0}
    # First miss within a ping interval, then quick re-pings; then the grace.
    assert 5.0 < marks["killed"] - marks["hung"] < 5.0 + 3 * 3.0 + 5.0 + 3.0
    assert daemon.restarts == {"unhealthy": 1}
    (failed,) = [e for e in logs if e["event"] == "dockerd_failed"]
    assert failed["cause"] == "dockerd stopped answering /_ping and was killed (hung)"


def test_hup_before_running_is_held_and_delivered_once_running() -> None:
    """HUP while dockerd starts (before its handlers exist) is held, not sent; it reaches
    dockerd once it runs, once; nothing counts as a failed start."""
    spawner = FakeSpawner(lambda pid: FakeDockerd(pid=pid, ready_after=2.0))
    daemon = daemon_for(spawner)

    async def body(daemon: Daemon, spawner: FakeSpawner, result: dict[str, Any]) -> None:
        await until(lambda: bool(spawner.processes))
        daemon.forward_signal(signal.SIGHUP)
        daemon.forward_signal(signal.SIGHUP)
        assert spawner.current.signals == []
        assert daemon.status()["held_signals"] == ["SIGHUP"]
        await daemon.wait_for_state(lc.State.RUNNING)
        assert spawner.current.signals == [signal.SIGHUP]
        daemon.forward_signal(signal.SIGUSR1)
        assert spawner.current.signals == [signal.SIGHUP, signal.SIGUSR1]
        daemon.request_stop()

    assert scenario(body, spawner, daemon) == {"code": 0}
    assert daemon.status()["failed_starts_in_window"] == 0


def test_an_adopted_dockerd_is_supervised_without_a_spawn() -> None:
    """A dockerd that runs already (launched before the loop, or left by an agent that died)
    is adopted: no spawn, ready from its pings, restarted as usual when it dies."""
    spawner = FakeSpawner()
    daemon = daemon_for(spawner)
    adopted = FakeDockerd(pid=42, ready_after=0.1)

    async def main() -> dict[str, Any]:
        result: dict[str, Any] = {}
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                result["code"] = await daemon.run(Incarnation(
                    number=1, process=adopted, notify=FakeNotify(), adopted=True  # type: ignore[arg-type]
                ))

            tg.start_soon(run)
            spawner.processes.append(adopted)
            await daemon.wait_for_state(lc.State.RUNNING)
            result["spawned_before_exit"] = len(spawner.processes)
            adopted.exit(None)  # its status went to PID 1 and was not reported
            await until(lambda: len(spawner.processes) == 2)
            await daemon.wait_for_state(lc.State.RUNNING)
            result["exit_code_seen"] = daemon.last_exit_code
            daemon.request_stop()
        return result

    result = run_virtual(main)
    assert result == {"code": 0, "spawned_before_exit": 1, "exit_code_seen": None}
    assert spawner.released[0] == 42


def test_stop_during_backoff_spawns_nothing_more() -> None:
    """A stop request while waiting to restart ends at once with 0: no new dockerd."""
    spawner = FakeSpawner(lambda pid: FakeDockerd(pid=pid, ready_after=None))
    daemon = daemon_for(spawner, RESTART_BACKOFF_INITIAL="30s", RESTART_BACKOFF_MAX="30s")

    async def body(daemon: Daemon, spawner: FakeSpawner, result: dict[str, Any]) -> None:
        await until(lambda: bool(spawner.processes))
        spawner.current.exit(1)
        await daemon.wait_for_state(lc.State.BACKOFF)
        daemon.request_stop()

    assert scenario(body, spawner, daemon) == {"code": 0}
    assert len(spawner.processes) == 1


def test_cancelled_while_dockerd_runs_detaches_it_for_the_next_agent() -> None:
    """The agent ending on a bug cancels the Daemon: dockerd keeps running and its descriptors
    stay deposited (detached), while a dockerd that exited is released."""
    spawner = FakeSpawner(lambda pid: FakeDockerd(pid=pid, ready_after=0.5))
    daemon = daemon_for(spawner, RESTART_BACKOFF_INITIAL="1s")

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)
            await daemon.wait_for_state(lc.State.RUNNING)
            spawner.current.exit(1)  # a crash: released, then a new one runs
            await until(lambda: len(spawner.processes) == 2)
            await daemon.wait_for_state(lc.State.RUNNING)
            tg.cancel_scope.cancel()

    run_virtual(main)
    assert spawner.released == [101, 102]
    assert spawner.detached == [102]
    last = spawner.processes[-1]
    assert (last.terms, last.kills, last.code) == (0, 0, None)  # left running for the next agent


# Why dockerd failed ------------------------------------------------------------------

HOSTS_CLASH = (
    "unable to configure the Docker daemon with file /etc/docker/daemon.json: the following"
    " directives are specified both as a flag and in the configuration file: hosts: (from flag:"
    " [fd://], from file: [tcp://0.0.0.0:2375])"
)
HANDSHAKE_EOF = "2026-12-01 13:50:49.382723 I | http: TLS handshake error from 127.0.0.1:5: EOF"


def test_a_refused_configuration_ends_the_agent_at_once_with_exit_2() -> None:
    """dockerd names daemon.json and exits: no backoff, no second start, exit 2 quoting the
    line with its cause and remedy; /status and dockerd_failed say the same."""
    spawner = FakeSpawner(lambda pid: FakeDockerd(pid=pid, ready_after=None))
    daemon = daemon_for(spawner)

    async def body(daemon: Daemon, spawner: FakeSpawner, result: dict[str, Any]) -> None:
        await until(lambda: len(spawner.processes) == 1)
        spawner.current.say(HOSTS_CLASH)
        spawner.current.exit(1)

    with capture_logs() as logs:
        result = scenario(body, spawner, daemon)
    error = result["gave_up"]
    assert isinstance(error, DockerdRefusedConfiguration)
    assert error.exit_code == 2
    assert len(spawner.processes) == 1
    assert HOSTS_CLASH in error.message
    assert "hosts" in (error.cause or "")
    assert error.remedy is not None
    assert "remove `hosts`" in error.remedy
    status = daemon.status()
    assert status["state"] == "fatal"
    assert status["last_error"] == HOSTS_CLASH
    assert status["last_failure"]["category"] == "config"
    assert status["last_failure"]["remedy"] == error.remedy
    (failed,) = [e for e in logs if e["event"] == "dockerd_failed"]
    assert (failed["line"], failed["category"], failed["rule"]) == (HOSTS_CLASH, "config",
                                                                    "config_clash")


def test_give_up_quotes_the_line_its_cause_and_its_remedy() -> None:
    """Failed starts that a restart might fix (a pid file) are retried; the give-up message
    quotes dockerd's line with its cause, and its remedy replaces the generic one."""
    pidfile = ("failed to start daemon: pid file found, ensure docker is not running or delete"
               " /var/run/docker.pid")
    spawner = FakeSpawner(lambda pid: FakeDockerd(pid=pid, ready_after=None))
    daemon = daemon_for(spawner, RESTART_MAX_FAILURES="2")

    async def body(daemon: Daemon, spawner: FakeSpawner, result: dict[str, Any]) -> None:
        for count in (1, 2):
            await until(lambda count=count: len(spawner.processes) == count)  # type: ignore[misc]
            spawner.current.say(HANDSHAKE_EOF, pidfile, HANDSHAKE_EOF)
            spawner.current.exit(1)

    result = scenario(body, spawner, daemon)
    error = result["gave_up"]
    assert type(error) is DockerdGaveUp
    assert f'"{pidfile}"' in error.message
    assert "another dockerd runs" in error.message
    assert error.remedy is not None
    assert "delete /var/run/docker.pid" in error.remedy


def test_unknown_error_is_quoted_verbatim_and_handshakes_never_are() -> None:
    """A line the table does not know is the last error as printed; handshake lines are not."""
    spawner = FakeSpawner(lambda pid: FakeDockerd(pid=pid, ready_after=None))
    daemon = daemon_for(spawner, RESTART_MAX_FAILURES="1")

    async def body(daemon: Daemon, spawner: FakeSpawner, result: dict[str, Any]) -> None:
        await until(lambda: len(spawner.processes) == 1)
        spawner.current.say("cannot frobnicate: the widget is gone", HANDSHAKE_EOF)
        spawner.current.exit(1)

    result = scenario(body, spawner, daemon)
    assert "last error from dockerd: \"cannot frobnicate: the widget is gone\"" in (
        result["gave_up"].message)
    assert daemon.status()["last_failure"]["cause"] is None


def test_restarts_of_a_healthy_dockerd_leave_no_last_error() -> None:
    """A served dockerd killed (no line) and one restarted for a rotation, both after printing
    handshake errors: no last error, and the handshakes are counted by reason."""
    spawner = FakeSpawner()
    daemon = daemon_for(spawner, RESTART_HEALTHY_AFTER="1s")

    async def body(daemon: Daemon, spawner: FakeSpawner, result: dict[str, Any]) -> None:
        for count in (1, 2):
            await until(lambda count=count: len(spawner.processes) == count  # type: ignore[misc]
                        and daemon.state is lc.State.RUNNING)
            await anyio.sleep(2)
            for line in (HANDSHAKE_EOF,):
                spawner.current.say(line)
                daemon.observe_line(parse_dockerd_line(line))
            if count == 1:
                spawner.current.exit(-9)
            else:
                daemon.request_restart(lc.RestartReason.TLS_ROTATION)
        await until(lambda: len(spawner.processes) == 3 and daemon.state is lc.State.RUNNING)
        daemon.request_stop()

    with capture_logs() as logs:
        result = scenario(body, spawner, daemon)
    assert result == {"code": 0}
    status = daemon.status()
    assert status["last_error"] is None
    assert status["last_failure"] is None
    assert status["client_handshake_failures"] == {"eof": 2}
    (failed,) = [e for e in logs if e["event"] == "dockerd_failed"]  # the kill only
    assert failed["line"] is None
    assert "killed by a signal" in failed["cause"]
    metric = daemon._metrics.registry.get_sample_value(
        "dind_tls_client_handshake_failures_total", {"reason": "eof"})
    assert metric == 2.0
    assert daemon._metrics.registry.get_sample_value(
        "dind_tls_client_handshake_failures_total", {"reason": "unknown_ca"}) == 0.0


def test_containerd_timeout_on_a_full_data_root_names_the_disk() -> None:
    """Only 'timeout waiting for containerd' from dockerd, but statvfs shows no room: the
    failure says the data root's filesystem is full, with its figures."""
    full = DiskFigures(size_bytes=2**20, free_bytes=0, inodes=64, free_inodes=3,
                       used_fraction=1.0)
    spawner = FakeSpawner(lambda pid: FakeDockerd(pid=pid, ready_after=None))
    daemon = daemon_for(spawner, RESTART_MAX_FAILURES="1", disk=full)

    async def body(daemon: Daemon, spawner: FakeSpawner, result: dict[str, Any]) -> None:
        await until(lambda: len(spawner.processes) == 1)
        spawner.current.say("failed to start containerd: timeout waiting for containerd to start")
        spawner.current.exit(1)

    result = scenario(body, spawner, daemon)
    message = result["gave_up"].message
    assert "the data root's filesystem is full" in message
    assert "/var/lib/docker: 0 B and 3 inodes free" in message
    assert daemon.status()["last_failure"]["category"] == "disk"
