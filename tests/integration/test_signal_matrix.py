"""Every signal PID 1 forwards, in every phase of the lifecycle, plus kill -9 and a crash of
the agent in each phase: the outcome each must have (docs/reliability.md, "Signals").

The agent runs as real PID 1 of a sandbox with a real dockerd, under
``python -m tests.harness``, which stops it at a phase's milestone (a file the
test waits for) until the test has acted; nothing depends on timing. Phases:

- ``launch``: the agent is up but does not handle signals yet (PID 1 holds them);
- ``certificates``: the agent is issuing the TLS set (a fresh certdir);
- ``starting``: dockerd spawned, its readiness not yet seen;
- ``running``: dockerd ready;
- ``backoff``: dockerd died while starting, its restart delayed (5 s here);
- ``stopping``: the final stop under way (TERM sent, containers being stopped).

Each case is counted in the reliability line as a fault (survived when its
outcome holds).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ReliabilityTally
from tests.integration.conftest import import_busybox
from tests.integration.sandbox import PYTHON, Sandbox, poll

pytestmark = pytest.mark.integration

PHASES = ("launch", "certificates", "starting", "running", "backoff", "stopping")
STOP = ("TERM", "INT", "QUIT")
FORWARDED = ("HUP", "USR1")
SIGNALS = (*STOP, *FORWARDED, "USR2")
HARNESS_INSIDE = "/run/harness"  # /run is the sandbox's own folder; /tmp gets a tmpfs
BACKOFF = "5s"
# What dockerd (20.10 and later) logs when a forwarded signal reached it.
DOCKERD_SAYS = {"HUP": "Got signal to reload configuration",
                "USR1": "goroutine stacks written to"}


@dataclass(frozen=True)
class Case:
    action: str  # a signal name, "kill9" or "crash"
    phase: str

    @property
    def id(self) -> str:
        return f"{self.action}-{self.phase}"


CASES = [Case(s, p) for s in SIGNALS for p in PHASES] + [
    Case(a, p) for a in ("kill9", "crash") for p in PHASES
]


class Run:
    """One sandbox brought to a phase."""

    def __init__(self, sandboxes: Callable[..., Sandbox], case: Case, root: Path) -> None:
        self.case = case
        pause = {"launch": "launch", "certificates": "certificates", "starting": "starting",
                 "backoff": "starting"}.get(case.phase)
        env = {"DOCKER_TLS_CERTDIR": "/certs", "HARNESS_DIR": HARNESS_INSIDE}
        if case.action == "crash" and case.phase in ("launch", "certificates", "starting"):
            env["HARNESS_CRASH"] = case.phase
            pause = None
        elif case.action == "crash":
            env["HARNESS_CRASH_ON_SIGNAL"] = "USR2"
        if case.phase == "stopping":
            pause = "stopping"
        if pause:
            env["HARNESS_PAUSE"] = pause
        self.box = sandboxes(
            root=root, env=env,
            command=[PYTHON, "-m", "tests.harness", "run", "--log-level", "debug",
                     "--restart-backoff-initial", BACKOFF, "--", "--bridge=none"],
        )
        self.harness = self.box.run_dir / "harness"
        self.harness.mkdir(exist_ok=True)

    # Milestones -------------------------------------------------------------

    def paused(self, point: str) -> None:
        poll(lambda: (self.harness / f"paused-{point}").exists() or self._dead(), timeout=40,
             interval=0.01, what=f"the agent paused at {point}")

    def release(self, point: str) -> None:
        (self.harness / f"release-{point}").touch()

    def _dead(self) -> bool:
        if not self.box.alive:
            raise AssertionError(f"the sandbox ended ({self.box.returncode}):\n"
                                 f"{self.box.log_tail()}")
        return False

    def event(self, name: str, count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
        return list(poll(lambda: (found := self.box.events_named(name)) and len(found) >= count
                         and found, timeout=timeout, interval=0.02, what=f"{count} of {name}"))

    def spawned(self) -> int:
        return len(self.box.events_named("dockerd_started"))

    def reach(self) -> None:
        """Bring the sandbox to the case's phase."""
        phase = self.case.phase
        if phase in ("launch", "certificates", "starting") and "HARNESS_CRASH" not in (
            self.box.env
        ):
            self.paused(phase)
        elif phase == "running":
            self.box.wait_ready(timeout=40)
        elif phase == "backoff":
            self.paused("starting")
            dockerd = poll(self.box.dockerd_pid, timeout=10, what="dockerd")
            os.kill(dockerd, signal.SIGKILL)
            self.event("dockerd_restart_delayed")
        elif phase == "stopping":
            self.box.wait_ready(timeout=40)
            self.box.signal(signal.SIGTERM)
            self.paused("stopping")

    def go_on(self) -> None:
        """Let a paused agent continue."""
        for point in ("launch", "certificates", "starting", "stopping"):
            self.release(point)

    def finish(self, timeout: float = 60) -> int:
        """The final stop the user would make: TERM to PID 1, the exit code."""
        if self.box.alive:
            self.box.signal(signal.SIGTERM)
        return self.box.wait(timeout)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_signal_matrix(
    case: Case, sandboxes: Callable[..., Sandbox], tmp_path: Path, busybox_tar: Path,
    reliability_tally: ReliabilityTally,
) -> None:
    tally = reliability_tally
    tally.faults += 1
    run = Run(sandboxes, case, tmp_path / "box")
    run.reach()
    if case.action in SIGNALS:
        _signal_case(run, case, busybox_tar)
    elif case.action == "kill9":
        _agent_death_case(run, case, busybox_tar, kill=True)
    else:
        _agent_death_case(run, case, busybox_tar, kill=False)
    certdir_complete(run.box.certs)
    tally.survived += 1


def _signal_case(run: Run, case: Case, busybox_tar: Path) -> None:
    box = run.box
    name = case.action
    box.signal(getattr(signal, f"SIG{name}"))
    if case.phase == "stopping":
        run.event("signal_received", count=2)  # the TERM that began the stop, then this one
    run.go_on()
    received = [e for e in run.event("signal_received", count=2 if case.phase == "stopping"
                                     else 1) if e["signal"] == f"SIG{name}"]
    assert received, box.log_tail()
    if name in STOP:
        code = box.wait(60)
        assert code == 0, box.log_tail()
        expected_spawns = {"launch": 0, "certificates": 0}.get(case.phase, 1)
        assert run.spawned() == expected_spawns, box.log_tail()
        if case.phase in ("launch", "certificates"):
            assert box.events_named("dockerd_not_started"), box.log_tail()
        if case.phase == "stopping":
            # Asked again: no more waiting for the containers, dockerd stopped at once.
            assert box.events_named("stop_requested"), box.log_tail()
        assert not box.events_named("dockerd_killed"), "dockerd was killed, not stopped"
        return
    if name == "USR2":
        run.event("status_reported")
    else:
        forwarded = run.event("signal_forwarded", timeout=40)
        if case.phase in ("launch", "certificates", "starting", "backoff"):
            # dockerd could not take it yet: held, then delivered once it ran.
            assert box.events_named("signal_held"), box.log_tail()
            assert forwarded[0].get("held") is True, forwarded
        poll(lambda: any(DOCKERD_SAYS[name] in line for line in box.iter_dockerd_lines()),
             timeout=20, what=f"dockerd's word that it got {name}")
    # Nothing counted against dockerd: one start (two after the backoff's kill), no failure.
    if case.phase != "stopping":
        box.wait_ready(timeout=40)
    expected = 2 if case.phase == "backoff" else 1
    assert run.spawned() == expected, box.log_tail()
    assert all(e.get("exit_code") != 129 for e in box.events_named("dockerd_exited")), (
        "a forwarded HUP killed dockerd")
    assert run.finish() == 0, box.log_tail()


def _agent_death_case(run: Run, case: Case, busybox_tar: Path, *, kill: bool) -> None:
    box = run.box
    container = None
    if case.phase == "running":
        import_busybox(box, busybox_tar)
        box.docker("run", "-d", "--name", "keep", "--network", "none", "busybox:test",
                   "sleep", "100000")
        container = box.docker("inspect", "-f", "{{.Id}} {{.State.Pid}}", "keep").stdout
    dockerd_before = box.dockerd_pid()
    if kill:
        agent = poll(box.agent_pid, timeout=10, what="the agent")
        os.kill(agent, signal.SIGKILL)
    elif case.phase in ("running", "backoff", "stopping"):
        box.signal(signal.SIGUSR2)  # the harness makes the agent's own handling raise
    run.go_on()
    died = run.event("agent_died")
    if kill:
        assert died[0]["signal"] == "SIGKILL", died
    else:
        assert died[0]["exit_code"] == 70, died
        crashed = run.event("agent_crashed")
        assert "crash injected" in crashed[0]["error"], crashed
    if case.phase == "stopping":
        # The new agent finishes the stop the first one began.
        assert box.wait(60) == 0, box.log_tail()
        assert not box.events_named("dockerd_stopped_by_init"), box.log_tail()
        return
    box.wait_ready(timeout=40)
    assert box.metric("dind_agent_restarts_total") == 1
    if case.phase in ("starting", "running"):
        taken_over = box.events_named("dockerd_taken_over")
        assert taken_over, box.log_tail()
        first = box.events_named("dockerd_started")[0]
        assert taken_over[0]["pid"] == first["pid"], "dockerd was replaced, not taken over"
        if dockerd_before is not None:
            assert box.dockerd_pid() == dockerd_before
    if container is not None:
        after = box.docker("inspect", "-f", "{{.Id}} {{.State.Pid}}", "keep").stdout
        assert after == container, "the container did not survive the agent's death"
    spawned = {"backoff": 2, "starting": 1, "running": 1}.get(case.phase, 1)
    assert run.spawned() == spawned, box.log_tail()
    assert run.finish() == 0, box.log_tail()


def certdir_complete(certs: Path) -> None:
    """The certdir is untouched (empty) or a complete set: never half-written."""
    files = sorted(str(p.relative_to(certs)) for p in certs.rglob("*.pem")
                   if ".previous" not in p.parts)
    if not files:
        return
    for folder in ("ca", "server", "client"):
        for name in (("cert.pem", "key.pem") if folder == "ca"
                     else ("ca.pem", "cert.pem", "key.pem")):
            assert f"{folder}/{name}" in files, files
