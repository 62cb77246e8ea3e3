"""The containerd part: its exits seen, logged and counted; restarted when it is the agent's.

One part, three ways (``plan.ManagedBy``):

- ``agent``: the containerd the launch started (or took over) is supervised
  like dockerd: its exit is seen on its pidfd, logged (``containerd_exited``
  with pid, exit code and signal) and it is started again, at once after a
  long run, with backoff after short ones; one that stops answering its
  socket for ``liveness.failures`` probes in a row is TERMed, then KILLed
  (``containerd_unhealthy``). dockerd keeps running throughout: its
  containerd client reconnects by itself. The part stops it (TERM, then KILL
  after ``dockerd.stop_timeout``) when the agent ends, after dockerd (parts
  stop in reverse order).
- ``dockerd``: dockerd starts and restarts its own; the part finds it (pid
  file, or below dockerd in rootless mode), sees its exit on a pidfd, and
  counts a new containerd under the same dockerd as a restart.
- ``external``: the user's containerd; only its socket is probed.

In every way the socket is probed (``probe.py``) to say whether containerd
answers: ``dind_containerd_up``, ``/status`` and ``available`` (which
``/readyz`` uses: while containerd is down, containers cannot be started,
stopped or exec'd).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus

from supervisor.config import Config
from supervisor.containerd import plan as cplan
from supervisor.containerd import probe
from supervisor.containerd.process import ContainerdProcess, Runner
from supervisor.init import ROLE_STOP
from supervisor.logs import get_logger
from supervisor.metrics import Metrics, exit_code_value

PidProvider = Callable[[], int | None]

PROBE_TIMEOUT = 1.0
PROBE_INTERVAL = 1.0  # while it answers
FAST_INTERVAL = 0.02  # while waiting for a new containerd to answer
FIND_INTERVAL = 0.1  # dockerd-managed: looking for the next containerd
DOWN_AFTER_MISSES = 2  # a live containerd is "down" after this many silent probes


class ContainerdService:
    """Owns what the agent knows about containerd; ``run`` is the part."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        setup: cplan.Setup,
        *,
        initial: ContainerdProcess | None = None,
        runner: Runner | None = None,
        find_pid: PidProvider = lambda: None,
        dockerd_pid: PidProvider = lambda: None,
        probe_path: Callable[[int | None], Path] | None = None,
        may_spawn: bool = True,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self.setup = setup
        self._initial = initial
        self._runner = runner
        self._find_pid = find_pid
        self._dockerd_pid = dockerd_pid
        self._probe_path = probe_path or (lambda _pid: setup.address)
        self._wall = wall_clock
        self._may_spawn = may_spawn  # False for an agent that only stops what runs
        self._backoff = cplan.Backoff.from_config(config)
        self._log = get_logger(component="containerd")
        self._stopping = False
        self.pid: int | None = None
        self.up: bool | None = None  # None: not probed yet
        self.since = wall_clock()
        self.down_since: float | None = None
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.last_signal: str | None = None
        metrics.containerd_up.set(0)

    # Views ------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False while containerd is known to be down (exited, or not answering)."""
        return self.up is not False

    def status(self) -> dict[str, Any]:
        return {
            "managed_by": self.setup.managed_by.value,
            "why": self.setup.reason,
            "address": str(self.setup.address),
            "pid": self.pid,
            "up": self.up,
            "since": self.since,
            "restarts": self.restarts,
            "last_exit_code": self.last_exit_code,
            "last_signal": self.last_signal,
        }

    def _set_up(self, up: bool, *, announce: bool = True, **fields: Any) -> None:
        if up is self.up:
            return
        was = self.up
        now = self._wall()
        self.up, self.since = up, now
        self._metrics.containerd_up.set(1 if up else 0)
        if up:
            down_for = None if self.down_since is None else round(now - self.down_since, 3)
            self.down_since = None
            if was is False:
                self._log.info("containerd_answering", pid=self.pid, down_seconds=down_for,
                               managed_by=self.setup.managed_by.value, **fields)
        else:
            self.down_since = now
            if announce:  # an exit has its own event
                self._log.warning(
                    "containerd_not_answering", pid=self.pid, address=str(self.setup.address),
                    managed_by=self.setup.managed_by.value,
                    remedy="containers cannot be started, stopped or exec'd until it answers",
                    **fields,
                )

    # The part -----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        match self.setup.managed_by:
            case cplan.ManagedBy.AGENT if self._runner is not None:
                await self._supervise(self._runner)
            case cplan.ManagedBy.DOCKERD:
                await self._watch_dockerds()
            case _:  # the user's own containerd: its socket only
                await self._probe_loop(None)

    def _on_exit(self, pid: int, returncode: int | None, *, ran_for: float | None,
                 **fields: Any) -> None:
        """One event for one exit: the pid, its exit code and signal, who restarts it."""
        code = None if returncode is None else exit_code_value(returncode)
        sig = None
        if returncode is not None and returncode < 0:
            with contextlib.suppress(ValueError):
                sig = signal.Signals(-returncode).name
        self.last_exit_code, self.last_signal = code, sig
        level = 20 if self._stopping else 30
        self._log.log(
            level, "containerd_exited", pid=pid, exit_code=code, signal=sig,
            ran_seconds=None if ran_for is None else round(ran_for, 3),
            managed_by=self.setup.managed_by.value, **fields,
        )
        self.pid = None
        self._set_up(False, announce=False)

    # Agent-managed --------------------------------------------------------------------

    async def _supervise(self, runner: Runner) -> None:
        process, streak = self._initial, 0
        try:
            while True:
                if process is None and not self._may_spawn:
                    return
                if process is None:
                    process = await self._spawn(runner)
                    if process is None:
                        delay, streak = self._backoff.after(ran_for=0.0, streak=streak)
                        await anyio.sleep(delay)
                        continue
                self.pid = process.pid
                began = anyio.current_time() - max(0.0, self._wall() - process.started_at)
                returncode = await self._run_one(process)
                ran_for = anyio.current_time() - began
                delay, streak = self._backoff.after(ran_for=ran_for, streak=streak)
                failure = process.diagnosis.failure()
                self._on_exit(
                    process.pid, returncode, ran_for=ran_for,
                    last_error=failure.line if failure is not None else None,
                    restart_in_seconds=None if self._stopping else delay,
                )
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(runner.release, process)
                process = None
                await anyio.sleep(delay)
        finally:
            if process is not None:
                with anyio.CancelScope(shield=True):
                    await self._stop(runner, process)

    async def _spawn(self, runner: Runner) -> ContainerdProcess | None:
        self.restarts += 1
        self._metrics.containerd_restarts.inc()
        try:
            # Shielded: a containerd started while the part is cancelled must still be
            # known, so that the part's clean-up stops it.
            with anyio.CancelScope(shield=True):
                process = await anyio.to_thread.run_sync(runner.spawn)
        except OSError as exc:
            self._log.error("containerd_spawn_failed", error=f"cannot run containerd:"
                            f" {exc.strerror or exc}")
            return None
        self._log.info("containerd_started", pid=process.pid, restarts=self.restarts,
                       **runner.describe_last())
        return process

    async def _run_one(self, process: ContainerdProcess) -> int | None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(process.relay_output)
            tg.start_soon(self._probe_loop, process)
            returncode = await process.wait()
            with anyio.move_on_after(1.0):  # its last lines before its exit is judged
                await process.output_done.wait()
            tg.cancel_scope.cancel()
        return returncode

    async def _stop(self, runner: Runner, process: ContainerdProcess) -> None:
        """The final stop: one TERM (containerd leaves the shims and containers running),
        KILL after ``dockerd.stop_timeout``."""
        self._stopping = True
        self._log.info("containerd_terminating", pid=process.pid)
        async with anyio.create_task_group() as tg:
            tg.start_soon(process.relay_output)
            process.terminate()
            returncode: int | None = None
            with anyio.move_on_after(self._config.dockerd.stop_timeout) as scope:
                returncode = await process.wait()
            if scope.cancelled_caught:
                self._log.warning("containerd_killed", pid=process.pid, reason="stop timeout")
                process.send_signal(signal.SIGKILL)
                returncode = await process.wait()
            with anyio.move_on_after(1.0):
                await process.output_done.wait()
            tg.cancel_scope.cancel()
        self._on_exit(process.pid, returncode, ran_for=None)
        await anyio.to_thread.run_sync(runner.release, process)

    # Probing --------------------------------------------------------------------------

    async def _probe_loop(self, process: ContainerdProcess | None) -> None:
        """Probe the socket for as long as this containerd lives (cancelled at its exit).

        Quickly until it first answers (a new containerd is ready within tens of
        milliseconds), then every PROBE_INTERVAL. The agent's own containerd is
        replaced when it misses ``liveness.failures`` probes in a row after it
        answered, or never answers within ``dockerd.start_timeout``.
        """
        misses, answered = 0, False
        began = anyio.current_time()
        while True:
            path = self._probe_path(self.pid)
            if await probe.answers(path, timeout=PROBE_TIMEOUT):
                misses, answered = 0, True
                self._set_up(True)
            elif answered:
                misses += 1
                if self.up is not False and misses >= DOWN_AFTER_MISSES:
                    self._set_up(False, missed_probes=misses)
                if process is not None and misses >= self._config.liveness.failures:
                    await self._replace_hung(process, f"missed {misses} probes in a row")
            elif process is not None and (
                anyio.current_time() - began > self._config.dockerd.start_timeout
            ):
                await self._replace_hung(process, "never answered within"
                                         f" {self._config.dockerd.start_timeout:g} s")
            await anyio.sleep(PROBE_INTERVAL if answered else FAST_INTERVAL)

    async def _replace_hung(self, process: ContainerdProcess, why: str) -> None:
        """TERM, KILL after ``liveness.kill_grace``; its exit then restarts it."""
        self._log.error("containerd_unhealthy", pid=process.pid, reason=why,
                        remedy="containerd does not answer on its socket; restarting it")
        process.terminate()
        with anyio.move_on_after(self._config.liveness.kill_grace):
            while not process.exited():  # noqa: ASYNC110 - the exit is awaited elsewhere
                await anyio.sleep(FAST_INTERVAL)
        process.send_signal(signal.SIGKILL)
        await anyio.sleep_forever()  # the exit ends this containerd's task group

    # dockerd-managed --------------------------------------------------------------------

    async def _watch_dockerds(self) -> None:
        """Follow each containerd dockerd starts: its exit, and the next one."""
        last_dead: int | None = None
        dockerd_at_exit: int | None = None
        while True:
            pid = await anyio.to_thread.run_sync(self._find_pid)
            if pid is None or pid == last_dead:  # none yet, or the dead one not yet reaped
                await anyio.sleep(FIND_INTERVAL)
                continue
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue
            try:
                if last_dead is not None and dockerd_at_exit == self._dockerd_pid():
                    # dockerd itself started a new one after the last one died.
                    self.restarts += 1
                    self._metrics.containerd_restarts.inc()
                self.pid = pid
                self._log.info("containerd_found", pid=pid, managed_by="dockerd",
                               dockerd_pid=self._dockerd_pid())
                began = anyio.current_time()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._probe_loop, None)
                    await anyio.wait_readable(pidfd)
                    tg.cancel_scope.cancel()
            finally:
                os.close(pidfd)
            dockerd_at_exit = self._dockerd_pid()
            last_dead = pid
            self._on_exit(pid, None, ran_for=anyio.current_time() - began,
                          dockerd_pid=dockerd_at_exit,
                          note="dockerd reaps it and starts a new one after its health checks"
                          " (about 10 s)")


class Launch(Protocol):
    """What the launch stage left for this part (``launch.Launched``)."""

    role: str
    containerd_setup: cplan.Setup | None
    containerd_runner: Runner | None
    containerd: ContainerdProcess | None


def for_agent(
    config: Config, metrics: Metrics, launched: Launch, dockerd_pid: PidProvider
) -> ContainerdService:
    """The part as the agent needs it: how to find containerd and reach its socket; its
    /proc figures (``dind_containerd_process_*``) follow the containerd it knows."""
    from supervisor.procstats import ProcessFigures, pid_from_file

    setup = launched.containerd_setup or cplan.decide(config)
    find_pid: PidProvider = lambda: None  # noqa: E731
    probe_path = None
    if setup.managed_by is cplan.ManagedBy.DOCKERD and config.rootless_on:
        from supervisor.policy.probe import find_children

        def below_dockerd() -> int | None:
            pid = dockerd_pid()
            found = [] if pid is None else find_children("/proc", pid, comm="containerd")
            return found[0] if found else None

        def inside(pid: int | None) -> Path:
            # Its socket is in rootlesskit's mount namespace: reached through its root.
            return setup.address if pid is None else Path(f"/proc/{pid}/root{setup.address}")

        find_pid, probe_path = below_dockerd, inside
    elif setup.pidfile is not None:
        find_pid = pid_from_file(str(setup.pidfile), expect_comm="containerd")
    part = ContainerdService(
        config, metrics, setup, initial=launched.containerd, runner=launched.containerd_runner,
        find_pid=find_pid, dockerd_pid=dockerd_pid, probe_path=probe_path,
        may_spawn=launched.role != ROLE_STOP,
    )
    metrics.register(ProcessFigures(lambda: part.pid, process="containerd",
                                    expect_comm="containerd"))
    return part
