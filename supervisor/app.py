"""The agent: one root task group wiring the components, and the shutdown.

Order at start: logs -> metrics -> HTTP endpoint -> dockerd (with its
pre-spawn hooks) -> signal handling. The agent ends when dockerd has been
stopped on request (exit 0) or given up on (exit 1). Signals are read by one
task and mapped to actions by ``signal_action``, a pure table.
"""

from __future__ import annotations

import enum
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

import anyio

from supervisor import __version__
from supervisor.config import Config, parse_listen
from supervisor.docker_api import DockerApi
from supervisor.dockerd import lifecycle as lc
from supervisor.dockerd.daemon import Daemon
from supervisor.dockerd.process import build_argv
from supervisor.errors import SupervisorError
from supervisor.http import HttpEndpoint, build_app
from supervisor.logs import get_logger
from supervisor.metrics import Metrics
from supervisor.notify import SystemdNotifier


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


def signal_action(signum: int) -> SignalAction | None:
    try:
        return SIGNAL_ACTIONS.get(signal.Signals(signum))
    except ValueError:
        return None


class Agent:
    """Everything the agent runs, built from a validated ``Config``."""

    def __init__(self, config: Config, *, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.env = dict(os.environ if env is None else env)
        self.metrics = Metrics()
        self.log = get_logger(component="agent")
        self.started_at = time.time()
        self.api = DockerApi(config.socket_path)
        self.systemd = SystemdNotifier(self.env)
        self.daemon = Daemon(
            config=config,
            metrics=self.metrics,
            ping=self.api.ping,
            argv=self.dockerd_argv,
            env=self.dockerd_env,
            before_spawn=[self.prepare_spawn],
        )
        self.daemon.state_listeners.append(self._on_dockerd_state)

    # What dockerd gets ----------------------------------------------------

    def dockerd_argv(self) -> list[str]:
        return build_argv(self.config)

    def dockerd_env(self) -> dict[str, str]:
        env = {k: v for k, v in self.env.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        return env

    async def prepare_spawn(self) -> None:
        """Runs before every start of dockerd."""
        await anyio.Path(self.config.agent.state_dir).mkdir(parents=True, exist_ok=True)

    # Views ------------------------------------------------------------------

    def is_ready(self) -> bool:
        return self.daemon.state is lc.State.RUNNING

    def status(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "agent": {
                "version": __version__,
                "pid": os.getpid(),
                "started_at": self.started_at,
            },
            "dockerd": self.daemon.status(),
        }

    def _on_dockerd_state(self, state: lc.State) -> None:
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
                if self.config.http.listen:
                    host, port = parse_listen(self.config.http.listen)
                    app = build_app(
                        metrics=self.metrics, is_ready=self.is_ready, status=self.status
                    )
                    await tg.start(HttpEndpoint(app, host, port).run)
                tg.start_soon(self._handle_signals)
                if self.systemd.watchdog_interval is not None:
                    tg.start_soon(self._watchdog, self.systemd.watchdog_interval)
                try:
                    code = await self.daemon.run()
                except SupervisorError as exc:
                    # Raised outside the task group, so callers get it as it is
                    # and not wrapped in an ExceptionGroup.
                    failure = exc
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.api.aclose()
        if failure is not None:
            self.systemd.stopping(f"failed: {failure.message}")
            raise failure
        self.systemd.stopping("stopped")
        self.log.info("agent_stopped", exit_code=code)
        return code

    async def _handle_signals(self) -> None:
        with anyio.open_signal_receiver(*SIGNAL_ACTIONS) as signals:
            async for signum in signals:
                action = signal_action(signum)
                name = signal.Signals(signum).name
                self.log.info("signal_received", signal=name, action=action and action.value)
                if action is SignalAction.STOP:
                    self.systemd.stopping("stopping dockerd")
                    self.daemon.request_stop()
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


def run_agent(config: Config) -> int:
    """Entry point of the agent process (a child of PID 1, or the main process)."""
    log = get_logger(component="agent")
    log.info("agent_started", version=__version__, pid=os.getpid(), parent_pid=os.getppid())

    async def main() -> int:
        return await Agent(config).run()

    try:
        return anyio.run(main)
    except SupervisorError as exc:
        log.error("agent_failed", error=exc.message, remedy=exc.remedy, exit_code=exc.exit_code)
        return exc.exit_code
