"""Starting the containerd the agent manages, or taking over the one a dead agent left.

Synchronous, like ``dockerd/spawner.py``: the launch stage starts containerd
(and waits until its socket answers) before dockerd, before the event loop
exists; the service calls ``spawn`` from a worker thread for a restart.

A start writes containerd's configuration where dockerd would
(``<exec-root>/containerd/containerd.toml``), runs it through the same exec
wrapper as dockerd (``policy.apply.wrap_argv``: the rlimits and
oom_score_adj it used to inherit from dockerd), in its own session, with one
output pipe, writes the pid file dockerd would have written, and deposits
with PID 1 (``fdstore``) what must outlive the agent: the pidfd, the output
pipe, and the pid (so PID 1 can stop it, after dockerd, if no agent is left).

Does not decide when to start or restart (``service.py``) nor who manages
containerd (``plan.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor.atomicfile import replace_file
from supervisor.config import Config
from supervisor.containerd import plan as cplan
from supervisor.containerd.probe import wait_answering
from supervisor.dockerd.process import DockerdProcess, spawn
from supervisor.dockerd_flags import config_file_of
from supervisor.fdstore import Depositor, pidfd_pid

if TYPE_CHECKING:
    from supervisor.policy.plan import Plan

PIDFD_NAME = "containerd"
OUTPUT_NAME = "containerd-output"
PID_KEY = "containerd_pid"  # told to PID 1 (SET), like dockerd_pid


class ContainerdProcess(DockerdProcess):
    """One containerd process: dockerd's process handling, its lines logged as containerd's
    (containerd writes logrus lines too)."""

    source = "containerd"
    serves_held_sockets = False  # nobody queues for it: a stopped one is woken to stop cleanly

    def exited(self) -> bool:
        """Without waiting: has it exited (its pidfd is readable)?"""
        if self.pidfd is None:
            return False
        return bool(select.select([self.pidfd], [], [], 0)[0])


Wrap = Callable[[list[str], dict[str, str]], list[str]]


class Runner:
    """Starts, adopts and forgets the agent's containerd processes."""

    def __init__(
        self,
        setup: cplan.Setup,
        *,
        config_text: str,
        env: Callable[[], dict[str, str]],
        wrap: Wrap = lambda argv, env: argv,
        depositor: Depositor | None = None,
        binary: str = cplan.BINARY,
    ) -> None:
        self.setup = setup
        self._config_text = config_text
        self._env = env
        self._wrap = wrap
        self._depositor = depositor or Depositor()
        self._binary = binary
        self.last_argv: list[str] = []
        self.last_wrapped = False

    def spawn(self) -> ContainerdProcess:
        """Write the configuration, start containerd, record it; raises OSError."""
        s = self.setup
        s.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        s.root.mkdir(mode=0o711, parents=True, exist_ok=True)
        replace_file(s.config_file, self._config_text.encode(), mode=0o600, durable=False)
        with contextlib.suppress(FileNotFoundError):
            s.address.unlink()  # a dead containerd's socket file: containerd refuses to bind
        env = self._env()
        argv = cplan.argv(s, self._binary)
        command = self._wrap(argv, env)
        spawned = spawn(command, env=env)
        self.last_argv, self.last_wrapped = argv, command != argv
        process = ContainerdProcess(pid=spawned.pid, pidfd=spawned.pidfd, output=spawned.output,
                                    own_child=True, popen=spawned.popen,
                                    started_at=spawned.started_at)
        if s.pidfile is not None:
            with contextlib.suppress(OSError):
                replace_file(s.pidfile, str(process.pid).encode(), mode=0o644, durable=False)
        self._deposit(process)
        return process

    def describe_last(self) -> dict[str, Any]:
        return {"argv": self.last_argv, "wrapped": self.last_wrapped,
                "address": str(self.setup.address)}

    def _deposit(self, process: ContainerdProcess) -> None:
        self._depositor.set(**{PID_KEY: process.pid})
        if process.pidfd is not None:
            self._depositor.store(PIDFD_NAME, process.pidfd)
        if process.output is not None:
            self._depositor.store(OUTPUT_NAME, process.output)

    def release(self, process: ContainerdProcess) -> None:
        """That containerd is gone: its descriptors and its pid file go too."""
        for name in (PIDFD_NAME, OUTPUT_NAME):
            self._depositor.remove(name)
        self._depositor.set(**{PID_KEY: 0})
        process.close()
        pidfile = self.setup.pidfile
        if pidfile is not None:
            with contextlib.suppress(OSError, ValueError):
                if int(pidfile.read_text().strip() or 0) == process.pid:
                    pidfile.unlink()

    def adopt(self, inherited: Sequence[tuple[str, int]]) -> ContainerdProcess | None:
        """The containerd a previous agent left running, from what it deposited."""
        fds = dict(inherited)
        pidfd = fds.get(PIDFD_NAME)
        output = fds.get(OUTPUT_NAME)
        pid = None if pidfd is None else pidfd_pid(pidfd)
        if pid is None:  # none was deposited, or it exited in between
            for fd in (pidfd, output):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            if pidfd is not None:
                for name in (PIDFD_NAME, OUTPUT_NAME):
                    self._depositor.remove(name)
            return None
        if output is not None:
            os.set_blocking(output, False)
        return ContainerdProcess(pid=pid, pidfd=pidfd, output=output, own_child=False)


def start(
    runner: Runner, inherited: Sequence[tuple[str, int]], *, may_spawn: bool, timeout: float,
    log: Any,
) -> ContainerdProcess | None:
    """The launch's step: adopt the running containerd, or start one and wait until it answers.

    Returns None when none runs (a stop-only agent, or containerd cannot be
    run: the service tries again with backoff, and dockerd says what it misses).
    """
    adopted = runner.adopt(inherited)
    if adopted is not None:
        log.info("containerd_taken_over", component="containerd", pid=adopted.pid)
        return adopted
    if not may_spawn:
        return None
    began = time.monotonic()
    try:
        process = runner.spawn()
    except OSError as exc:
        log.error("containerd_spawn_failed", component="containerd",
                  error=f"cannot run containerd: {exc.strerror or exc}",
                  remedy="install containerd on dockerd's PATH, or set"
                  " dockerd.manage_containerd=false to let dockerd start its own")
        return None
    answering = wait_answering(runner.setup.address, timeout=timeout,
                               alive=lambda: not process.exited())
    fields = {"component": "containerd", "pid": process.pid,
              "seconds": round(time.monotonic() - began, 3), **runner.describe_last()}
    if answering:
        log.info("containerd_started", **fields)
    else:
        log.warning("containerd_not_answering", exited=process.exited(), **fields)
    return process


def decide(config: Config) -> cplan.Setup:
    """``plan.decide`` with daemon.json's top level read as dockerd will read it.

    A file dockerd would refuse counts as none here: dockerd (or the launch's
    own daemon.json check) reports it.
    """
    from supervisor.dockerd.daemonjson import read_daemon_json
    from supervisor.errors import ConfigError

    document = None
    path, given = config_file_of([config.dockerd.binary, *config.dockerd.args])
    with contextlib.suppress(ConfigError, OSError):
        document = read_daemon_json(Path(path), given=given)
    return cplan.decide(config, document)


def runner_for(
    config: Config, setup: cplan.Setup, planned: Plan, *, env: Callable[[], dict[str, str]],
    depositor: Depositor,
) -> Runner:
    """The Runner for the agent's containerd: dockerd's policy values, applied by the wrapper."""
    from supervisor.policy.apply import wrap_argv

    # containerd used to inherit dockerd's limits and oom_score_adj; it gets the same.
    policy = dataclasses.replace(planned, dockerd=dataclasses.replace(
        planned.dockerd, process="containerd"))

    def wrap(argv: list[str], environment: dict[str, str]) -> list[str]:
        return wrap_argv(policy, argv, env=environment)

    text = cplan.config_text(setup, data_root=Path(config.dockerd.data_root),
                             args=list(config.dockerd.args))
    return Runner(setup, config_text=text, env=env, wrap=wrap, depositor=depositor)
