"""The agent's own death is not the workload's: PID 1 starts a new agent, which takes over the
running dockerd from the descriptors PID 1 kept (fdstore), with live-restore's containers running
on; restarts are bounded, and only a graceful stop ends the namespace."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import import_busybox
from tests.integration.sandbox import Sandbox, poll

pytestmark = pytest.mark.integration


def _kill_agent(box: Sandbox) -> int:
    agent = box.agent_pid()
    assert agent is not None
    os.kill(agent, signal.SIGKILL)
    return agent


def _new_agent(box: Sandbox, old: int) -> int:
    return int(poll(lambda: (pid := box.agent_pid()) not in (None, old) and pid, timeout=20,
                    what="a new agent"))


def test_killed_agent_is_replaced_and_takes_over_dockerd(
    sandboxes: Callable[..., Sandbox], busybox_tar: Path
) -> None:
    """kill -9 of the agent while a container runs: a new agent takes over the same dockerd
    (not restarted), the container keeps its id and pid, one restart is counted, and dockerd's
    lines reach the log again (its output pipe was kept by PID 1)."""
    box = sandboxes()
    box.wait_ready()
    import_busybox(box, busybox_tar)
    box.docker("run", "-d", "--name", "keep", "--network", "none", "busybox:test",
               "sleep", "100000")
    container = box.docker("inspect", "-f", "{{.Id}} {{.State.Pid}}", "keep").stdout.strip()
    dockerd = box.dockerd_pid()
    inner = {host: ns_pid for host, (ns_pid, _comm, _state) in box.ns_processes().items()}
    old = _kill_agent(box)
    _new_agent(box, old)
    box.wait_ready(timeout=30)
    assert box.dockerd_pid() == dockerd
    assert box.docker("inspect", "-f", "{{.Id}} {{.State.Pid}}", "keep").stdout.strip() == (
        container
    )
    assert box.metric("dind_agent_restarts_total") == 1
    [died] = box.events_named("agent_died")
    assert (died["pid"], died["signal"]) == (inner[old], "SIGKILL")
    assert box.events_named("dockerd_taken_over")
    status = box.status()
    assert (status["agent"]["restarts"], status["agent"]["took_over"]) == (1, True)
    # dockerd's output still reaches the log: HUP makes it say that it reloads.
    box.signal(signal.SIGHUP)
    poll(lambda: any("reload" in line.lower() for line in box.iter_dockerd_lines()),
         timeout=15, what="dockerd's reload line after the takeover")
    box.signal(signal.SIGTERM)
    assert box.wait(timeout=60) == 0
    terms = [line for line in box.iter_dockerd_lines() if "Processing signal 'terminated'" in line]
    assert len(terms) == 1


def test_agent_deaths_are_bounded_then_dockerd_is_stopped_gracefully(
    sandboxes: Callable[..., Sandbox],
) -> None:
    """More deaths than agent.restart_limit: a last agent stops dockerd with its one TERM, and
    PID 1 exits 1 (the documented code) instead of leaving dockerd to the kernel's SIGKILL."""
    box = sandboxes(agent_args=["--agent-restart-limit", "2"])
    box.wait_ready()
    dockerd = box.dockerd_pid()
    agent = _kill_agent(box)
    for _ in range(2):
        agent = _new_agent(box, agent)
        box.wait_ready(timeout=30)
        assert box.dockerd_pid() == dockerd
        os.kill(agent, signal.SIGKILL)
    assert box.wait(timeout=60) == 1
    assert [e["event"] for e in box.events() if e.get("component") == "init"] == [
        "agent_died", "agent_died", "agent_died", "agent_restarts_exhausted",
    ]
    terms = [line for line in box.iter_dockerd_lines() if "Processing signal 'terminated'" in line]
    assert len(terms) == 1
