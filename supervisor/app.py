"""The agent: its parts in order, like tini's main(), and the final stop.

After the launch (``launch.py``: lock, policy, preparation, certificates,
sockets and dockerd's spawn, before any heavy import; see ``run.py``),
``Agent.run`` starts the parts, each once the one before it is ready, and
stops them in reverse order (``parts.py``). The agent ends when dockerd has
been stopped on request (exit 0) or given up on (exit 1), or a core part
failed.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiodocker  # noqa: F401  (imported before the loop runs: see docker_api)
import anyio
from anyio.abc import TaskGroup, TaskStatus
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

from supervisor import containers as watched
from supervisor import http as endpoint
from supervisor.agent_settings import SETTINGS_KEY, settings_document
from supervisor.containerd.service import for_agent as containerd_service
from supervisor.crash import crash_handler, guarded
from supervisor.dataroot.service import DataRootService
from supervisor.docker_api import DockerApi, hand_out_info
from supervisor.dockerd import lifecycle as lc
from supervisor.dockerd.daemon import Daemon
from supervisor.launch import Launched
from supervisor.logs import get_logger
from supervisor.metrics import Metrics
from supervisor.notify import SystemdNotifier
from supervisor.parts import Parts
from supervisor.policy.service import PolicyService
from supervisor.procstats import ProcessFigures
from supervisor.rootless.view import RootlessView
from supervisor.signals import SignalAction, SignalReceiver, signal_action
from supervisor.stopfile import watch_stop_file

if TYPE_CHECKING:
    from supervisor.tls.service import TlsService


class Agent:
    """Everything the agent runs, built from what the launch made ready."""

    def __init__(self, launched: Launched) -> None:
        config = self.config = launched.config
        self.launched = launched
        self.log = get_logger(component="agent")
        self.metrics = metrics = Metrics()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=metrics.registry)
        metrics.agent_restarts.inc(launched.agent_restarts)
        self.api = DockerApi(config.socket_path)
        self.systemd = SystemdNotifier(os.environ)
        self.containers = watched.ContainerTable()
        metrics.register(watched.ContainerCollector(self.containers))
        self._clean_stop = False
        self._stopping = False
        self._tg: TaskGroup | None = None
        self._done = anyio.Event()
        self._code = 1
        self._on_crash = crash_handler(
            successor_takes_over=launched.under_init and launched.depositor.active)
        self.data_root = DataRootService(
            config, metrics, lock=launched.lock, previous_run=launched.previous_run,
            clean=lambda: self._clean_stop, takeover=launched.takeover)
        self.tls = self._tls_service(launched)
        self.daemon = Daemon(
            config=config, metrics=metrics, spawner=launched.spawner, ping=self.api.ping,
            ready_check=lambda: self.api.answers(
                tls_address=config.tls.listen if self.tls else None,
                tls_files=self.tls.view if self.tls else None),
            before_spawn=[self.data_root.before_spawn, *([self.tls.before_spawn] if self.tls
                                                         else [])],
        )
        self.rootless = RootlessView.for_config(config, lambda: self.daemon.pid)
        # In rootless mode the pid the agent supervises is rootlesskit's; /proc figures
        # and the policy check want dockerd's own, below it.
        dockerd_own_pid = self.rootless.dockerd_pid if self.rootless else lambda: self.daemon.pid
        self.containerd = containerd_service(config, metrics, launched, dockerd_own_pid)
        self.policy = PolicyService(
            config, metrics, policy=launched.policy, plan=launched.plan,
            deviations=launched.deviations, under_init=launched.under_init,
            dockerd_pid=dockerd_own_pid, host_config=self.api.container_host_config,
        )
        launched.spawner.observers += [self.policy.observe_line, self.daemon.observe_line]
        self.signals = SignalReceiver(self._on_signal)
        self.http = self._http_endpoint()
        metrics.register(ProcessFigures(dockerd_own_pid, expect_comm="dockerd"))
        self.daemon.state_listeners.append(self._on_dockerd_state)

    def _tls_service(self, launched: Launched) -> TlsService | None:
        if not self.config.tls_enabled or launched.sans is None:
            return None
        from supervisor.tls.service import TlsService, clients_probe

        return TlsService(
            self.config, self.metrics, sans=launched.sans, report=launched.certs,
            manifest=launched.manifest, quiet=clients_probe(launched.spawner.served_tcp_ports),
            request_restart=lambda: self.daemon.request_restart(lc.RestartReason.TLS_ROTATION),
        )

    def _http_endpoint(self) -> endpoint.HttpEndpoint | None:
        http = self.config.http
        if not http.listen and not http.socket:
            return None
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
        config = self.config
        async with Parts(self.metrics, on_crash=self._on_crash) as parts:
            await parts.start("signals", self.signals.run)
            await parts.start("dataroot", self.data_root.run)
            await parts.start("policy", self.policy.run)
            await parts.start("listeners", self.launched.listeners.hold, lambda: (
                self._clean_stop or self.daemon.state.value in ("exited", "fatal")))
            await parts.start("containerd", self.containerd.run)  # stopped after dockerd
            await parts.start("dockerd", self._run_daemon, stop=self._stop_and_wait)
            if self.tls is not None:
                await parts.start("tls", self.tls.run)
            if self.http is not None:
                await parts.auxiliary("http", self.http.run)
            readers = [self.data_root.dockerd_ready, *([self.rootless.dockerd_ready]
                                                        if self.rootless else [])]
            await parts.auxiliary("dockerd_info", self.daemon.while_ready,
                                  lambda: hand_out_info(self.api, readers))
            await parts.auxiliary("containers", self.daemon.while_ready, self._watch_containers)
            if self.config.dataroot.gc_enabled:
                await parts.auxiliary("gc", self.daemon.while_ready,
                                      lambda: self.data_root.run_gc_loop(self.api))
            if config.agent.stop_file:
                await parts.auxiliary("stop_file", watch_stop_file, Path(config.agent.stop_file),
                                      lambda: self._begin_stop("stop file"))
            if self.systemd.watchdog_interval is not None:
                await parts.auxiliary("watchdog", self.systemd.watchdog_while,
                                      lambda: self.daemon.liveness_ok)
            if self.launched.stop_requested:
                self._begin_stop("requested before the agent could handle it")
            # Until dockerd's part ends (stopped or given up) or a core part failed.
            await parts.wait_until(self._done)

    async def _run_daemon(self, *, task_status: TaskStatus[None]) -> None:
        try:
            self._code = await self.daemon.run(self.launched.incarnation, task_status=task_status,
                                               start=not self.launched.stop_requested)
            self._clean_stop = self._code == 0
        finally:
            self._done.set()

    async def _stop_and_wait(self) -> None:
        """The dockerd part's way to stop when another part fails: gracefully, bounded."""
        self._begin_stop("the agent is ending")
        with anyio.move_on_after(self.config.dockerd.stop_timeout * 2 + 10):
            await self._done.wait()

    # What the outside sees ------------------------------------------------------

    def is_ready(self) -> bool:
        return self.daemon.state is lc.State.RUNNING and self.containerd.available

    def status(self, local: bool = False) -> dict[str, Any]:
        figures = self.containers.snapshot()
        return {**({SETTINGS_KEY: settings_document(self.config)} if local else {}),
            "schema": 1,
            "agent": self.launched.agent_status(),
            "dockerd": self.daemon.status(),
            "containerd": self.containerd.status(),
            "tls": self.tls.status() if self.tls else {"enabled": False},
            "data_root": self.data_root.status(),
            "prepare": self.launched.prepare,
            "policy": self.policy.status(),
            "rootless": self.rootless.status() if self.rootless else {"enabled": False},
            # None until the first container list: zeros would be a guess.
            "containers": dict(figures.by_state) if figures.listed else None,
        }

    def _on_dockerd_state(self, state: Any) -> None:
        if state is lc.State.RUNNING:
            if self.http is not None:
                self.http.reload_certificates()
            self.systemd.ready(f"dockerd ready (pid {self.daemon.pid})")
        else:
            self.systemd.status(f"dockerd {state.value}")

    # While dockerd is ready -----------------------------------------------------

    async def _watch_containers(self) -> None:
        source = watched.AiodockerContainerSource(self.api.docker)
        await watched.ContainerWatcher(self.containers).run(source)

    # Stopping -------------------------------------------------------------------

    def _on_signal(self, signum: int) -> None:
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
        self._tg.start_soon(guarded, self.stop_gracefully, self._on_crash)

    async def stop_gracefully(self) -> None:
        """The final stop: containers first when dockerd would leave them running, then
        the one TERM to dockerd."""
        if self.config.live_restore_on and self.is_ready():
            await self.api.stop_containers_within(self.config.dockerd.stop_timeout)
        self.daemon.request_stop()
