"""The agent: one root task group wiring the components, and the shutdown.

Order at start: container preparation -> data root (lock, run marker,
preflight) -> TLS certificates -> HTTP endpoint -> dockerd (with its
pre-spawn hooks) -> signal handling. While dockerd is ready, a per-readiness
task group runs what needs its API (storage driver, container events, GC);
it is cancelled whenever dockerd stops being ready. The agent ends when
dockerd has been stopped on request (exit 0) or given up on (exit 1).
Signals are read by one task and mapped to actions by ``signal_action``.
"""

from __future__ import annotations

import enum
import importlib
import os
import signal
import socket
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

from supervisor import __version__
from supervisor.config import Config, parse_listen
from supervisor.containers import (
    AiodockerContainerSource,
    ContainerCollector,
    ContainerTable,
    ContainerWatcher,
)
from supervisor.dataroot.service import DataRootService, log_findings
from supervisor.docker_api import DockerApi, DockerApiError, tcp_listening
from supervisor.dockerd import lifecycle as lc
from supervisor.dockerd.daemon import Daemon
from supervisor.dockerd.process import PLAIN_TCP_LISTEN, build_argv
from supervisor.errors import ConfigError, SupervisorError
from supervisor.logs import get_logger
from supervisor.metrics import Metrics
from supervisor.network import bind_listener, detect_mtu
from supervisor.notify import SystemdNotifier
from supervisor.policy.service import PolicyService
from supervisor.procstats import ProcessFigures, pid_from_file
from supervisor.tls.service import TlsService, sans_from_config


class SignalAction(enum.Enum):
    STOP = "stop"  # graceful stop of dockerd, then exit 0
    FORWARD = "forward"  # pass on to dockerd (HUP: reload daemon.json; USR1: stack dump)
    LOG_STATUS = "log_status"


SIGNAL_ACTIONS: Mapping[signal.Signals, SignalAction] = {
    signal.SIGTERM: SignalAction.STOP,
    signal.SIGINT: SignalAction.STOP,
    signal.SIGQUIT: SignalAction.STOP,
    signal.SIGHUP: SignalAction.FORWARD,
    signal.SIGUSR1: SignalAction.FORWARD,
    signal.SIGUSR2: SignalAction.LOG_STATUS,
}

_NOT_READY = tuple(state for state in lc.State if state is not lc.State.RUNNING)


def signal_action(signum: int) -> SignalAction | None:
    try:
        return SIGNAL_ACTIONS.get(signal.Signals(signum))
    except ValueError:
        return None


class Agent:
    """Everything the agent runs, built from a validated ``Config``."""

    def __init__(
        self,
        config: Config,
        *,
        env: Mapping[str, str] | None = None,
        under_init: bool = False,
    ) -> None:
        self.config = config
        self.env = dict(os.environ if env is None else env)
        self.under_init = under_init
        self.metrics = Metrics()
        registry = self.metrics.registry
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.log = get_logger(component="agent")
        self.started_at = time.time()
        self.api = DockerApi(config.socket_path)
        self.systemd = SystemdNotifier(self.env)
        self.data_root = DataRootService(config, self.metrics)
        self.tls = (
            TlsService(
                config,
                self.metrics,
                request_restart=lambda: self.daemon.request_restart(lc.RestartReason.TLS_ROTATION),
            )
            if config.tls_enabled
            else None
        )
        self.prepare_report: Any = None
        self.http_ssl_context: ssl.SSLContext | None = None
        self.fatal: SupervisorError | None = None
        self.http_socket: socket.socket | None = None
        self._stopping = False
        self._task_group: TaskGroup | None = None
        self.prepare_env: dict[str, str] = {}
        self.policy = PolicyService(
            config, self.metrics, under_init=under_init, dockerd_pid=self._dockerd_pid
        )
        self.containers = ContainerTable()
        self.metrics.register(ContainerCollector(self.containers))
        self.daemon = Daemon(
            config=config,
            metrics=self.metrics,
            ping=self.api.ping,
            argv=self.dockerd_argv,
            env=self.dockerd_env,
            before_spawn=[
                self.prepare_spawn,
                self.data_root.before_spawn,
                *([self.tls.before_spawn] if self.tls else []),
            ],
            ready_check=self.ready_check,
            observers=[self.policy.observe_line],
            wrap=self.policy.wrap,
        )
        self.metrics.register(ProcessFigures(self._dockerd_pid, expect_comm="dockerd"))
        self.metrics.register(
            ProcessFigures(
                pid_from_file(str(config.dockerd.containerd_pidfile)),
                process="containerd",
                expect_comm="containerd",
            )
        )
        self.daemon.state_listeners.append(self._on_dockerd_state)

    def _dockerd_pid(self) -> int | None:
        # Collectors are asked for samples as soon as they are registered,
        # which is before the daemon exists.
        daemon: Daemon | None = getattr(self, "daemon", None)
        return daemon.pid if daemon is not None else None

    # What dockerd gets ----------------------------------------------------

    def dockerd_argv(self) -> list[str]:
        mtu = self.config.dockerd.mtu or detect_mtu()
        return build_argv(
            self.config,
            tls=self.tls.files if self.tls else None,
            mtu=mtu,
            extra=self.policy.extra_dockerd_args(),
        )

    def dockerd_env(self) -> dict[str, str]:
        drop = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
        env = {k: v for k, v in self.env.items() if k not in drop}
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        env.update(self.prepare_env)
        return env

    async def prepare_spawn(self) -> None:
        """Runs before every start of dockerd."""
        await anyio.Path(self.config.agent.state_dir).mkdir(parents=True, exist_ok=True)

    # Start-up ----------------------------------------------------------------

    @property
    def should_prepare(self) -> bool:
        enabled = self.config.prepare.enabled
        return enabled == "true" or (enabled == "auto" and self.under_init)

    async def start_up(self) -> None:
        """Everything that must hold before dockerd may start; errors end the agent."""
        if self.config.http.listen:
            self.http_socket = self._bind_http()
        if self.tls is not None:
            # A bad DOCKER_TLS_SAN is a configuration error: refuse it before acting.
            self.tls.sans = sans_from_config(self.config)
        # The lock first: a second agent on this data root must leave without
        # having touched mounts, iptables or limits.
        await self.data_root.start()
        await anyio.to_thread.run_sync(self.policy.start)
        if self.should_prepare:
            await self._prepare()
        if self.tls is not None:
            await self.tls.ensure()

    async def _prepare(self) -> None:
        from supervisor.prepare import dockerd_env, options_from_config, prepare

        options = options_from_config(self.config)
        report = await anyio.to_thread.run_sync(
            lambda: prepare(options, env=self.env)
        )
        self.prepare_report = report
        self.prepare_env = dockerd_env(report, self.env)
        log_findings(self.log, "preparation_finding", list(report.findings))

    async def ready_check(self) -> None:
        """/_ping on the socket, and with TLS the TCP listener too: dockerd opens it last."""
        await self.api.ping()
        if self.tls is not None:
            await tcp_listening(self.config.tls.listen)

    # Views ------------------------------------------------------------------

    def is_ready(self) -> bool:
        return self.daemon.state is lc.State.RUNNING

    def status(self) -> dict[str, Any]:
        figures = self.containers.snapshot()
        return {
            "schema": 1,
            "agent": {
                "version": __version__,
                "pid": os.getpid(),
                "under_init": self.under_init,
                "started_at": self.started_at,
            },
            "dockerd": self.daemon.status(),
            "tls": self.tls.status() if self.tls else {"enabled": False},
            "data_root": self.data_root.status(),
            "prepare": self.prepare_report.as_dict() if self.prepare_report else None,
            "policy": self.policy.status(),
            # None until the first container list: zeros would be a guess.
            "containers": dict(figures.by_state) if figures.listed else None,
        }

    def _on_dockerd_state(self, state: lc.State) -> None:
        if state is lc.State.RUNNING and self.http_ssl_context is not None and self.tls:
            # dockerd is (re)started after every renewal of server/: the endpoint
            # takes the same files for its new connections, without a restart.
            files = self.tls.files
            try:
                self.http_ssl_context.load_cert_chain(str(files.cert), str(files.key))
            except (OSError, ssl.SSLError) as exc:
                self.log.warning("http_certificate_reload_failed", error=str(exc))
        if state is lc.State.RUNNING:
            self.systemd.ready(f"dockerd ready (pid {self.daemon.pid})")
        elif state is lc.State.STOPPING:
            self.systemd.status("dockerd stopping")
        elif state in (lc.State.STARTING, lc.State.BACKOFF):
            self.systemd.status(f"dockerd {state.value}")

    # Running ----------------------------------------------------------------

    async def run(self) -> int:
        """The root task group; returns the exit code (raises SupervisorError on failure)."""
        failure: SupervisorError | None = None
        code = 1
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                tg.start_soon(self._handle_signals)
                if self.systemd.watchdog_interval is not None:
                    tg.start_soon(self._watchdog, self.systemd.watchdog_interval)
                try:
                    await self.start_up()
                    if self.config.http.listen:
                        # After start-up: HTTPS needs its certificates, and the
                        # endpoint's imports (aiohttp) overlap dockerd's own start.
                        tg.start_soon(self._serve_http)
                    if self.tls is not None:
                        await tg.start(self.tls.run)
                    tg.start_soon(self._while_ready)
                    if self.config.agent.stop_file:
                        tg.start_soon(self._watch_stop_file, Path(self.config.agent.stop_file))
                    code = await self.daemon.run()
                    if self.fatal is not None:
                        raise self.fatal
                except SupervisorError as exc:
                    # Raised outside the task group, so callers get it as it is
                    # and not wrapped in an ExceptionGroup.
                    failure = exc
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.api.aclose()
            # A refusal before dockerd ever ran leaves nothing unclean behind.
            never_ran = self.daemon.state is lc.State.STOPPED
            self.data_root.stop(clean=never_ran or (failure is None and code == 0))
        if failure is not None:
            self.systemd.stopping(f"failed: {failure.message}")
            raise failure
        self.systemd.stopping("stopped")
        self.log.info("agent_stopped", exit_code=code)
        return code

    def _bind_http(self) -> socket.socket:
        address = self.config.http.listen
        try:
            return bind_listener(*parse_listen(address), listen=False)
        except OSError as exc:
            raise ConfigError(
                key="http.listen",
                value=address,
                source=self.config.sources.get("http.listen", "default"),
                reason=f"cannot listen there: {exc.strerror or exc}",
                remedy="free that port or set --http-listen to another address"
                " (an empty value turns the endpoint off)",
            ) from None

    async def _serve_http(self) -> None:
        http = await anyio.to_thread.run_sync(importlib.import_module, "supervisor.http")
        host, port = parse_listen(self.config.http.listen)
        app = http.build_app(metrics=self.metrics, is_ready=self.is_ready, status=self.status)
        context = None
        if self.config.http.tls and self.tls is not None:
            files = self.tls.files
            context = http.client_auth_context(ca=files.ca, cert=files.cert, key=files.key)
            self.http_ssl_context = context
        try:
            await http.HttpEndpoint(
                app, host, port, ssl_context=context, sock=self.http_socket
            ).run()
        except OSError as exc:
            self.fatal = SupervisorError(
                f"cannot serve the HTTP endpoint on {self.config.http.listen}:"
                f" {exc.strerror or exc}",
                remedy="free that port or set --http-listen to another address"
                " (an empty value turns the endpoint off)",
            )
            self.daemon.request_stop()

    async def _while_ready(self) -> None:
        """Each time dockerd becomes ready, run what needs its API until it is not."""
        while True:
            await self.daemon.wait_for_state(lc.State.RUNNING)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._after_ready)
                tg.start_soon(
                    ContainerWatcher(self.containers).run,
                    AiodockerContainerSource(self.api.docker),
                )
                if self.config.dataroot.gc_enabled:
                    tg.start_soon(self.data_root.run_gc_loop, self.api)
                await self.daemon.wait_for_state(*_NOT_READY)
                tg.cancel_scope.cancel()

    async def _after_ready(self) -> None:
        try:
            info = await self.api.info()
        except DockerApiError as exc:
            self.log.warning("dockerd_info_failed", error=str(exc))
            return
        self.data_root.dockerd_ready(info)

    async def stop_gracefully(self) -> None:
        """The final stop: containers first, then the one TERM to dockerd.

        With --live-restore, dockerd leaves its containers running when it
        exits; at the final stop they would then die with the container's PID
        namespace, never getting their stop signal. So the agent stops them
        first (each with its own stop timeout, at most dockerd.stop_timeout).
        """
        if self.config.live_restore_on and self.daemon.state is lc.State.RUNNING:
            started = anyio.current_time()
            stopped = 0
            with anyio.move_on_after(self.config.dockerd.stop_timeout):
                try:
                    stopped = await self.api.stop_running_containers()
                except DockerApiError as exc:
                    self.log.warning("containers_not_stopped", error=str(exc))
            self.log.info(
                "containers_stopped",
                containers=stopped,
                seconds=round(anyio.current_time() - started, 3),
            )
        self.daemon.request_stop()

    async def _watch_stop_file(self, path: Path) -> None:
        """Sidecar mode: the job container writes this file when it is done."""
        # Polled: inotify does not see files written through another mount
        # namespace's view of a shared volume reliably, and once a second is plenty.
        while not await anyio.Path(path).exists():  # noqa: ASYNC110
            await anyio.sleep(1.0)
        self.log.info("stop_file_found", path=str(path))
        if not self._stopping:
            self._stopping = True
            await self.stop_gracefully()

    async def _handle_signals(self) -> None:
        with anyio.open_signal_receiver(*SIGNAL_ACTIONS) as signals:
            async for signum in signals:
                action = signal_action(signum)
                name = signal.Signals(signum).name
                self.log.info("signal_received", signal=name, action=action and action.value)
                if action is SignalAction.STOP:
                    self.systemd.stopping("stopping dockerd")
                    if self._stopping:
                        # Asked again: do not wait for the containers any longer.
                        self.daemon.request_stop()
                    elif self._task_group is not None:
                        self._stopping = True
                        self._task_group.start_soon(self.stop_gracefully)
                elif action is SignalAction.FORWARD:
                    self.daemon.forward_signal(signum)
                elif action is SignalAction.LOG_STATUS:
                    self.log.info("status_reported", **self.status())

    async def _watchdog(self, interval: float) -> None:
        """WATCHDOG=1 only while our loop runs and dockerd is not known to be hung."""
        while True:
            await anyio.sleep(interval)
            if self.daemon.liveness_ok:
                self.systemd.watchdog()


def run_agent(config: Config, *, under_init: bool = False) -> int:
    """Entry point of the agent process (a child of PID 1, or the main process)."""
    log = get_logger(component="agent")
    log.info("agent_started", version=__version__, pid=os.getpid(), parent_pid=os.getppid())
    for event, message in config.notices:
        log.info(event, message=message)
    if config.dockerd.exact_args:
        log.info(
            "dockerd_exact_args",
            message="dockerd runs with exactly the arguments given after `dockerd`: no TLS"
            " certificates, sockets, paths or live-restore are added by the agent",
            args=list(config.dockerd.args),
        )
    elif config.plain_tcp_served:
        log.warning(
            "plain_tcp_served",
            address=PLAIN_TCP_LISTEN,
            message="TLS is off, so dockerd serves tcp 2375 WITHOUT authentication, as"
            " docker:dind does: anyone who reaches that port controls dockerd and the host's"
            " kernel through it",
            remedy="set DOCKER_TLS_CERTDIR=/certs for TLS, or --dockerd-plain-tcp=false"
            " (DIND_SUPERVISOR_DOCKERD_PLAIN_TCP=false) for the unix socket only",
        )

    async def main() -> int:
        return await Agent(config, under_init=under_init).run()

    try:
        return anyio.run(main)
    except SupervisorError as exc:
        log.error("agent_failed", error=exc.message, remedy=exc.remedy, exit_code=exc.exit_code)
        return exc.exit_code
