"""The agent: its parts in order, like tini's main(), and the final stop.

``run_agent`` runs the launch first (``launch.py``: lock, policy,
preparation, certificates, sockets and dockerd's spawn, before any heavy
import), then ``Agent.run``: the parts, each started once the one before it
is ready and stopped in reverse order (``parts.py``). The agent ends when
dockerd has been stopped on request (exit 0) or given up on (exit 1), or a
core part failed.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from supervisor import __version__
from supervisor.config import Config
from supervisor.errors import SupervisorError
from supervisor.launch import EarlyLog, Launched, launch
from supervisor.logs import get_logger
from supervisor.policy.spec import Policy

_READY_PROBE_TIMEOUT = 2.0


def run_agent(config: Config, policy: Policy, *, under_init: bool = False) -> int:
    """Entry point of the agent process (a child of PID 1, or the main process)."""
    early = EarlyLog()
    early.info("agent_started", version=__version__, pid=os.getpid(), parent_pid=os.getppid())
    for event, message in config.notices:
        early.info(event, message=message)
    _say_how_dockerd_is_reached(config, early)
    doing = "starting (before dockerd's spawn)"
    try:
        launched = launch(config, policy, under_init=under_init, env=os.environ, log=early)
        _configure_logging(config, early)
        doing = "running"

        async def main() -> int:
            return await Agent(launched).run()

        code = anyio.run(main)
    except Exception as exc:  # every ending gets one structured line
        if not early.flushed:
            _configure_logging(config, early)
        return _report_failure(_unwrap(exc), doing)
    get_logger(component="agent").info("agent_stopped", exit_code=code)
    return code


def _say_how_dockerd_is_reached(config: Config, early: EarlyLog) -> None:
    from supervisor.dockerd.listeners import PLAIN_TCP_LISTEN

    if config.dockerd.exact_args:
        early.info(
            "dockerd_exact_args",
            message="dockerd runs with exactly the arguments given after `dockerd`: no TLS"
            " certificates, sockets, paths or live-restore are added by the agent",
            args=list(config.dockerd.args),
        )
    elif config.plain_tcp_served:
        early.warning(
            "plain_tcp_served",
            address=PLAIN_TCP_LISTEN,
            message="TLS is off, so dockerd serves tcp 2375 WITHOUT authentication, as"
            " docker:dind does: anyone who reaches that port controls dockerd and the host's"
            " kernel through it",
            remedy="set DOCKER_TLS_CERTDIR=/certs for TLS, or --dockerd-plain-tcp=false"
            " (DIND_SUPERVISOR_DOCKERD_PLAIN_TCP=false) for the unix socket only",
        )


def _unwrap(exc: BaseException) -> BaseException:
    """The one error inside task-group wrappers, so it is reported as itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _report_failure(exc: BaseException, doing: str) -> int:
    from supervisor.init import EXIT_CRASHED

    log = get_logger(component="agent")
    if isinstance(exc, SupervisorError):
        log.error("agent_failed", error=exc.message, remedy=exc.remedy, exit_code=exc.exit_code)
        return exc.exit_code
    # A bug: one line that says what was being done, the traceback at debug level.
    log.error(
        "agent_crashed", error=f"{type(exc).__name__}: {exc}", while_doing=doing,
        exit_code=EXIT_CRASHED,
        remedy="PID 1 starts a new agent, which takes over dockerd; please report this",
    )
    log.debug("agent_crash_traceback", exc_info=exc)
    return EXIT_CRASHED


def _configure_logging(config: Config, early: EarlyLog) -> None:
    from supervisor import logs

    logs.configure(format=config.log.format, level=config.log.level)
    early.flush()


class Agent:
    """Everything the agent runs, built from what the launch made ready."""

    def __init__(self, launched: Launched) -> None:
        from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

        from supervisor.containers import ContainerCollector, ContainerTable
        from supervisor.dataroot.service import DataRootService
        from supervisor.docker_api import DockerApi
        from supervisor.dockerd import lifecycle as lc
        from supervisor.dockerd.daemon import Daemon
        from supervisor.metrics import Metrics
        from supervisor.notify import SystemdNotifier
        from supervisor.policy.service import PolicyService
        from supervisor.procstats import ProcessFigures, pid_from_file
        from supervisor.signals import SignalReceiver

        config = self.config = launched.config
        self.launched = launched
        self.log = get_logger(component="agent")
        self.metrics = metrics = Metrics()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=metrics.registry)
        metrics.agent_restarts.inc(launched.agent_restarts)
        self.api = DockerApi(config.socket_path)
        self.systemd = SystemdNotifier(os.environ)
        self.containers = ContainerTable()
        metrics.register(ContainerCollector(self.containers))
        self._clean_stop = False
        self._stopping = False
        self._tg: TaskGroup | None = None
        self._done = anyio.Event()
        self._code = 1
        self.data_root = DataRootService(
            config, metrics, lock=launched.lock, previous_run=launched.previous_run,
            clean=lambda: self._clean_stop, takeover=launched.takeover,
        )
        self.tls = self._tls_service(launched)
        self.daemon = Daemon(
            config=config, metrics=metrics, spawner=launched.spawner, ping=self.api.ping,
            ready_check=self._ready_check,
            before_spawn=[self.data_root.before_spawn, *([self.tls.before_spawn] if self.tls
                                                         else [])],
        )
        self.policy = PolicyService(
            config, metrics, policy=launched.policy, plan=launched.plan,
            deviations=launched.deviations, under_init=launched.under_init,
            dockerd_pid=lambda: self.daemon.pid,
        )
        launched.spawner.observers.append(self.policy.observe_line)
        self.signals = SignalReceiver(self._on_signal)
        self.http = self._http_endpoint()
        metrics.register(ProcessFigures(lambda: self.daemon.pid, expect_comm="dockerd"))
        metrics.register(ProcessFigures(
            pid_from_file(str(config.dockerd.containerd_pidfile)), process="containerd",
            expect_comm="containerd",
        ))
        self.daemon.state_listeners.append(self._on_dockerd_state)
        self._running_state = lc.State.RUNNING

    def _tls_service(self, launched: Launched) -> Any:
        if not self.config.tls_enabled or launched.sans is None:
            return None
        from supervisor.dockerd import lifecycle as lc
        from supervisor.tls.service import TlsService

        return TlsService(
            self.config, self.metrics, sans=launched.sans, report=launched.certs,
            manifest=launched.manifest,
            request_restart=lambda: self.daemon.request_restart(lc.RestartReason.TLS_ROTATION),
        )

    def _http_endpoint(self) -> Any:
        http = self.config.http
        if not http.listen and not http.socket:
            return None
        from supervisor import http as endpoint

        app = endpoint.build_app(metrics=self.metrics, is_ready=self.is_ready, status=self.status)
        files = self.tls.files if http.tls and self.tls else None
        return endpoint.HttpEndpoint(
            app, sock=self.launched.http_socket, unix_path=Path(http.socket) if http.socket
            else None, server_files=files,
        )

    # The parts, in order ----------------------------------------------------

    async def run(self) -> int:
        failure: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                try:
                    await self._run_parts()
                except Exception as exc:  # raised below, outside the group
                    failure = exc
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.api.aclose()
        if failure is not None:
            raise failure
        return self._code

    async def _run_parts(self) -> None:
        from supervisor.parts import Parts

        async with Parts(self.metrics) as parts:
            await parts.start("signals", self.signals.run)
            await parts.start("dataroot", self.data_root.run)
            await parts.start("policy", self.policy.run)
            await parts.start("listeners", self._hold_listeners)
            await parts.start("dockerd", self._run_daemon, stop=self._stop_and_wait)
            if self.tls is not None:
                await parts.start("tls", self.tls.run)
            if self.http is not None:
                await parts.auxiliary("http", self.http.run)
            await parts.auxiliary("containers", self._while_ready, self._watch_containers)
            if self.config.dataroot.gc_enabled:
                await parts.auxiliary("gc", self._while_ready, self._collect_garbage)
            if self.config.agent.stop_file:
                await parts.auxiliary("stop_file", self._watch_stop_file)
            if self.systemd.watchdog_interval is not None:
                await parts.auxiliary("watchdog", self._watchdog)
            if self.launched.stop_pending or self.launched.role == "stop":
                self._begin_stop("requested before the agent could handle it")
            # Until dockerd's part ends (stopped or given up) or a core part failed.
            async with anyio.create_task_group() as waiting:
                waiting.start_soon(_set_when, self._done, parts.failed)
                await self._done.wait()
                waiting.cancel_scope.cancel()

    async def _hold_listeners(self, *, task_status: TaskStatus[None]) -> None:
        """dockerd's sockets: kept while the agent lives, closed after the final stop."""
        try:
            task_status.started()
            await anyio.sleep_forever()
        finally:
            if self._clean_stop or self.daemon.state.value in ("exited", "fatal"):
                self.launched.listeners.close()

    async def _run_daemon(self, *, task_status: TaskStatus[None]) -> None:
        try:
            self._code = await self.daemon.run(self.launched.incarnation, task_status=task_status)
            self._clean_stop = self._code == 0
        finally:
            self._done.set()

    async def _stop_and_wait(self) -> None:
        """The dockerd part's way to stop when another part fails: gracefully, bounded."""
        self._begin_stop("the agent is ending")
        with anyio.move_on_after(self.config.dockerd.stop_timeout * 2 + 10):
            await self._done.wait()

    # What dockerd's readiness means -------------------------------------------

    async def _ready_check(self) -> None:
        """/_ping on the socket; with TLS also a full handshake with the client certificate:
        a bare TCP connect would succeed on a held socket, and leaves an error in dockerd's log."""
        from supervisor.docker_api import tls_ping

        await self.api.ping()
        if self.tls is not None and self.config.tls.listen:
            with anyio.fail_after(_READY_PROBE_TIMEOUT):
                await tls_ping(self.config.tls.listen, self.tls.view)

    def is_ready(self) -> bool:
        return self.daemon.state is self._running_state

    def status(self) -> dict[str, Any]:
        figures = self.containers.snapshot()
        return {
            "schema": 1,
            "agent": {
                "version": __version__,
                "pid": os.getpid(),
                "under_init": self.launched.under_init,
                "started_at": self.launched.milestones["agent_started"],
                "restarts": self.launched.agent_restarts,
                "took_over": self.launched.takeover,
            },
            "dockerd": self.daemon.status(),
            "tls": self.tls.status() if self.tls else {"enabled": False},
            "data_root": self.data_root.status(),
            "prepare": self.launched.prepare,
            "policy": self.policy.status(),
            # None until the first container list: zeros would be a guess.
            "containers": dict(figures.by_state) if figures.listed else None,
        }

    def _on_dockerd_state(self, state: Any) -> None:
        if state is self._running_state:
            if self.http is not None:
                self.http.reload_certificates()
            self.systemd.ready(f"dockerd ready (pid {self.daemon.pid})")
        else:
            self.systemd.status(f"dockerd {state.value}")

    # While dockerd is ready -----------------------------------------------------

    async def _while_ready(self, work: Any, *, task_status: TaskStatus[None]) -> None:
        """Run ``work`` each time dockerd becomes ready, until it is not."""
        from supervisor.dockerd import lifecycle as lc

        task_status.started()
        while True:
            await self.daemon.wait_for_state(lc.State.RUNNING)
            async with anyio.create_task_group() as tg:
                tg.start_soon(work)
                await self.daemon.wait_for_state(*lc.NOT_READY)
                tg.cancel_scope.cancel()

    async def _watch_containers(self) -> None:
        from supervisor.containers import AiodockerContainerSource, ContainerWatcher
        from supervisor.docker_api import DockerApiError

        try:
            self.data_root.dockerd_ready(await self.api.info())
        except DockerApiError as exc:
            self.log.warning("dockerd_info_failed", error=str(exc))
        await ContainerWatcher(self.containers).run(AiodockerContainerSource(self.api.docker))

    async def _collect_garbage(self) -> None:
        await self.data_root.run_gc_loop(self.api)

    # Stopping -------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        from supervisor.signals import SignalAction, signal_action

        action = signal_action(signum)
        name = signal.Signals(signum).name
        self.log.info("signal_received", signal=name, action=action and action.value)
        if action is SignalAction.STOP:
            if self._stopping:
                self.daemon.request_stop()  # asked again: no more waiting for containers
            self._begin_stop(f"signal {name}")
        elif action is SignalAction.FORWARD:
            self.daemon.forward_signal(signum)
        elif action is SignalAction.LOG_STATUS:
            self.log.info("status_reported", **self.status())

    def _begin_stop(self, reason: str) -> None:
        if self._stopping or self._tg is None:
            return
        self._stopping = True
        self.launched.depositor.set(stopping=1)  # a new agent must finish this stop
        self.systemd.stopping("stopping dockerd")
        self.log.info("stop_requested", reason=reason)
        self._tg.start_soon(self.stop_gracefully)

    async def stop_gracefully(self) -> None:
        """The final stop: containers first, then the one TERM to dockerd.

        With --live-restore, dockerd leaves its containers running when it
        exits; at the final stop they would then die with the container's PID
        namespace, never getting their stop signal. So the agent stops them
        first (each with its own stop timeout, at most dockerd.stop_timeout).
        """
        from supervisor.docker_api import DockerApiError

        if self.config.live_restore_on and self.is_ready():
            started = anyio.current_time()
            stopped = 0
            with anyio.move_on_after(self.config.dockerd.stop_timeout):
                try:
                    stopped = await self.api.stop_running_containers()
                except DockerApiError as exc:
                    self.log.warning("containers_not_stopped", error=str(exc))
            self.log.info("containers_stopped", containers=stopped,
                          seconds=round(anyio.current_time() - started, 3))
        self.daemon.request_stop()

    async def _watch_stop_file(self, *, task_status: TaskStatus[None]) -> None:
        """Sidecar mode: the job container writes this file when it is done."""
        path = anyio.Path(self.config.agent.stop_file)
        task_status.started()
        # Polled: inotify does not see files written through another mount
        # namespace's view of a shared volume reliably, and once a second is plenty.
        while not await path.exists():  # noqa: ASYNC110
            await anyio.sleep(1.0)
        self.log.info("stop_file_found", path=str(path))
        self._begin_stop("stop file")

    async def _watchdog(self, *, task_status: TaskStatus[None]) -> None:
        """WATCHDOG=1 only while our loop runs and dockerd is not known to be hung."""
        interval = self.systemd.watchdog_interval or 1.0
        task_status.started()
        while True:
            await anyio.sleep(interval)
            if self.daemon.liveness_ok:
                self.systemd.watchdog()


async def _set_when(target: anyio.Event, source: anyio.Event) -> None:
    await source.wait()
    target.set()

