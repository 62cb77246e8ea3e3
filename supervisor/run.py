"""``dind-supervisor run`` in the agent's process: the launch, logging, the agent, and its end.

The order is the point: the launch (``launch.py``) starts dockerd before
structlog and the rest are imported; logging is configured after it and the
launch's events are emitted then, with their own times; the agent's parts
run (``app.py``). However it ends, one structured line says how: stopped
(0), a refusal or give-up with its remedy (its exit code), or a bug
(``agent_crashed``, exit ``EXIT_CRASHED``, which PID 1 answers with a new
agent), the traceback at debug level only.
"""

from __future__ import annotations

import os

from supervisor import __version__
from supervisor.config import Config
from supervisor.crash import report_failure
from supervisor.launch import EarlyLog, launch
from supervisor.logs import get_logger
from supervisor.policy.spec import Policy


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

        # Imported here, before the loop runs: an import is blocking work (files read,
        # modules executed), and dockerd has been starting since the launch anyway.
        # TLS is the one part app.py imports only when used. anyio too waits until
        # dockerd's spawn: nothing before it needs the loop.
        import anyio

        from supervisor.app import Agent

        if config.tls_enabled:
            import supervisor.tls.service  # noqa: F401

        async def main() -> int:
            return await Agent(launched).run()

        code = anyio.run(main)
    except Exception as exc:  # every ending gets one structured line
        if not early.flushed:
            _configure_logging(config, early)
        return report_failure(exc, doing)
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


def _configure_logging(config: Config, early: EarlyLog) -> None:
    from supervisor import logs

    logs.configure(format=config.log.format, level=config.log.level)
    early.flush()
