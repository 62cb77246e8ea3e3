"""containerd under the agent (started before dockerd, restarted at once, taken over by a new
agent, stopped after dockerd) and under dockerd (watched only): each exit is seen, logged and
counted, /readyz says when containers cannot be run or exec'd, and running containers survive."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import import_busybox
from tests.integration.sandbox import Sandbox, poll

pytestmark = pytest.mark.integration


def _containerd(box: Sandbox, *, other_than: int | None = None) -> int:
    """The host pid of the namespace's (single) containerd, a new one if ``other_than``."""
    def found() -> int | None:
        pids = [p for p in box.host_pids("containerd") if p != other_than]
        return pids[0] if len(pids) == 1 else None

    return int(poll(found, timeout=30, interval=0.02, what="a containerd"))


def _running(box: Sandbox, busybox_tar: Path) -> str:
    import_busybox(box, busybox_tar)
    box.docker("run", "-d", "--name", "keep", "--network", "none", "busybox:test",
               "sleep", "100000")
    return box.docker("inspect", "-f", "{{.Id}} {{.State.Pid}}", "keep").stdout.strip()


def _exec_works(box: Sandbox) -> bool:
    return box.docker("exec", "keep", "true", timeout=15, check=False).returncode == 0


def test_killed_containerd_is_restarted_by_the_agent_and_readiness_follows(
    sandboxes: Callable[..., Sandbox], busybox_tar: Path
) -> None:
    """kill -9 of the agent's containerd: one containerd_exited event (pid, 137, SIGKILL), a new
    containerd at once, exec works again within seconds, the container and dockerd live on; a
    second quick death waits a backoff, during which /readyz is 503, then 200 again."""
    box = sandboxes()
    box.wait_ready()
    container = _running(box, busybox_tar)
    dockerd = box.dockerd_pid()
    old = _containerd(box)
    assert box.metric("dind_containerd_up") == 1
    inner = box.ns_processes()[old][0]
    killed_at = time.monotonic()
    os.kill(old, signal.SIGKILL)
    new = _containerd(box, other_than=old)
    poll(lambda: _exec_works(box), timeout=10, interval=0.05, what="docker exec")
    exec_back = time.monotonic() - killed_at
    [exited] = box.events_named("containerd_exited")
    assert (exited["pid"], exited["exit_code"], exited["signal"], exited["restart_in_seconds"]) == (
        inner, 137, "SIGKILL", 0.0)
    assert box.metric("dind_containerd_restarts_total") == 1
    assert box.dockerd_pid() == dockerd  # dockerd was not restarted for it
    assert box.docker("inspect", "-f", "{{.Id}} {{.State.Pid}}", "keep").stdout.strip() == container
    assert exec_back < 8, f"docker exec came back after {exec_back:.1f} s"
    # A second death within restart.healthy_after: restarted after backoff_initial (1 s).
    os.kill(new, signal.SIGKILL)
    poll(lambda: box.http("/readyz")[0] == 503, timeout=1, interval=0.01, what="/readyz 503")
    status = box.status()["containerd"]
    assert (status["managed_by"], status["up"], status["last_signal"]) == ("agent", False,
                                                                          "SIGKILL")
    assert box.metric("dind_containerd_up") == 0
    assert box.metric("dind_dockerd_up") == 1  # dockerd itself answers: the alert's condition
    box.wait_ready(timeout=10)
    assert box.events_named("containerd_exited")[-1]["restart_in_seconds"] == 1.0
    poll(lambda: _exec_works(box), timeout=10, interval=0.05, what="docker exec")
    assert box.metric("dind_containerd_restarts_total") == 2
    assert box.status()["containerd"]["restarts"] == 2


def test_new_agent_takes_over_containerd_and_the_final_stop_ends_both_in_order(
    sandboxes: Callable[..., Sandbox], busybox_tar: Path
) -> None:
    """kill -9 of the agent: the new agent takes over the running containerd (same pid, not
    restarted), still restarts it when it dies, and the final stop ends dockerd first, then
    containerd, gracefully (exit 0, TERM not KILL)."""
    box = sandboxes()
    box.wait_ready()
    _running(box, busybox_tar)
    containerd = _containerd(box)
    agent = box.agent_pid()
    assert agent is not None
    os.kill(agent, signal.SIGKILL)
    poll(lambda: box.agent_pid() not in (None, agent), timeout=20, what="a new agent")
    box.wait_ready(timeout=30)
    assert box.host_pids("containerd") == [containerd]
    assert box.events_named("containerd_taken_over")
    assert len(box.events_named("containerd_started")) == 1  # the first agent's only
    assert box.metric("dind_containerd_restarts_total") == 0
    assert box.status()["containerd"]["pid"] == box.ns_processes()[containerd][0]
    # The adopted containerd is PID 1's child now; its death still reaches the new agent.
    os.kill(containerd, signal.SIGKILL)
    _containerd(box, other_than=containerd)
    poll(lambda: _exec_works(box), timeout=10, interval=0.05, what="docker exec")
    assert box.metric("dind_containerd_restarts_total") == 1
    box.signal(signal.SIGTERM)
    assert box.wait(timeout=60) == 0
    order = [e["event"] for e in box.events() if e.get("event") in (
        "dockerd_exited", "containerd_terminating", "containerd_exited", "containerd_killed")]
    assert order[-3:] == ["dockerd_exited", "containerd_terminating", "containerd_exited"]
    last = box.events_named("containerd_exited")[-1]
    assert (last["signal"], last["exit_code"]) == (None, 0), last


def test_containerd_run_by_dockerd_is_watched_and_its_outage_seen(
    sandboxes: Callable[..., Sandbox], busybox_tar: Path
) -> None:
    """dockerd.manage_containerd=false: dockerd starts its own containerd; its kill -9 is
    logged and /readyz is 503 until dockerd's replacement answers, counted as a restart."""
    box = sandboxes(agent_args=["--no-dockerd-manage-containerd"])
    box.wait_ready()
    container = _running(box, busybox_tar)
    dockerd = box.dockerd_pid()
    old = _containerd(box)
    assert not any(arg.startswith(b"--containerd")
                   for arg in Path(f"/proc/{dockerd}/cmdline").read_bytes().split(b"\0"))
    poll(lambda: box.metric("dind_containerd_up") == 1, timeout=5, what="containerd up")
    inner = box.ns_processes()[old][0]
    os.kill(old, signal.SIGKILL)
    poll(lambda: box.http("/readyz")[0] == 503, timeout=2, interval=0.02, what="/readyz 503")
    assert box.status()["containerd"]["managed_by"] == "dockerd"
    box.wait_ready(timeout=40)  # dockerd's own health checks: about 10 s
    poll(lambda: _exec_works(box), timeout=10, interval=0.1, what="docker exec")
    [exited] = box.events_named("containerd_exited")
    assert (exited["pid"], exited["managed_by"]) == (inner, "dockerd")
    assert box.metric("dind_containerd_restarts_total") == 1
    assert box.dockerd_pid() == dockerd
    assert box.docker("inspect", "-f", "{{.Id}} {{.State.Pid}}", "keep").stdout.strip() == container


def _limits(pid: int) -> tuple[str, str]:
    nofile = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
                  if line.startswith("Max open files"))
    return " ".join(nofile.split()), Path(f"/proc/{pid}/oom_score_adj").read_text().strip()


def test_the_agents_containerd_gets_dockerds_policy_and_the_data_root_works_both_ways(
    sandboxes: Callable[..., Sandbox], busybox_tar: Path, tmp_path: Path
) -> None:
    """containerd has dockerd's rlimits and oom_score_adj; a data root used with the agent's
    containerd works with dockerd's own and back again (same paths), container included."""
    data_root = tmp_path / "shared-data-root"
    first = sandboxes(data_root=data_root)
    first.wait_ready()
    dockerd, containerd = first.dockerd_pid(), _containerd(first)
    assert dockerd is not None
    assert _limits(containerd) == _limits(dockerd)
    import_busybox(first, busybox_tar)
    first.docker("run", "-d", "--name", "keep", "--network", "none", "busybox:test",
                 "sleep", "100000")
    first.signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0
    for args in (["--no-dockerd-manage-containerd"], []):
        box = sandboxes(data_root=data_root, agent_args=args)
        box.wait_ready()
        managed_by = box.status()["containerd"]["managed_by"]
        assert managed_by == ("dockerd" if args else "agent")
        box.docker("start", "keep")
        assert _exec_works(box), f"exec after start with containerd run by {managed_by}"
        box.signal(signal.SIGTERM)
        assert box.wait(timeout=60) == 0
