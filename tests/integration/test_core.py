"""The core contract against a real dockerd, the agent really PID 1 in private namespaces."""

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

FAST_LIVENESS = [
    "--liveness-interval", "0.3", "--liveness-timeout", "0.25",
    "--liveness-failures", "2", "--liveness-kill-grace", "1",
]


def test_ready_docker_cli_answers_and_ready_time_logged(sandboxes: Callable[..., Sandbox]) -> None:
    """Once /readyz says ready, the docker CLI answers and the agent logged the ready time."""
    box = sandboxes()
    box.wait_ready()
    assert box.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
    ready = box.events_named("dockerd_ready")
    assert len(ready) == 1
    assert 0 < ready[0]["ready_seconds"] < 30
    status = box.status()
    assert status["dockerd"]["state"] == "running"
    assert box.metric("dind_dockerd_up") == 1.0
    assert box.metric("dind_dockerd_ready_duration_seconds_count") == 1.0


def test_kill_9_dockerd_is_restarted_and_counted(sandboxes: Callable[..., Sandbox]) -> None:
    """A dockerd killed with -9 is replaced by a new one that becomes ready; reason `exit`."""
    box = sandboxes(agent_args=FAST_LIVENESS)
    box.wait_ready()
    first = box.dockerd_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    poll(lambda: (pid := box.dockerd_pid()) is not None and pid != first, timeout=20,
         what="a new dockerd")
    poll(lambda: box.status()["dockerd"]["state"] == "running", timeout=30, what="ready again")
    assert box.docker_answers()
    assert box.metric("dind_dockerd_restarts_total", {"reason": "exit"}) == 1.0
    assert box.metric("dind_dockerd_last_exit_code") == 128 + 9
    assert box.status()["dockerd"]["restarts"] == {"exit": 1}


def test_stopped_dockerd_is_detected_as_hung_and_restarted(
    sandboxes: Callable[..., Sandbox],
) -> None:
    """kill -STOP dockerd: missed pings mark it hung; it is killed and restarted (`unhealthy`)."""
    box = sandboxes(agent_args=FAST_LIVENESS)
    box.wait_ready()
    hung = box.dockerd_pid()
    assert hung is not None
    stopped_at = time.monotonic()
    os.kill(hung, signal.SIGSTOP)
    poll(lambda: box.events_named("dockerd_unhealthy"), timeout=10, what="hang detected")
    detected = time.monotonic() - stopped_at
    # Budget: failures x (interval + timeout), plus scheduling slack.
    assert detected < 2 * (0.3 + 0.25) + 2.0
    poll(lambda: box.status()["dockerd"]["state"] == "running" and box.dockerd_pid() != hung,
         timeout=30, what="a new ready dockerd")
    assert box.metric("dind_dockerd_restarts_total", {"reason": "unhealthy"}) == 1.0


def test_term_to_pid1_stops_dockerd_with_one_term_and_exits_0(
    sandboxes: Callable[..., Sandbox],
) -> None:
    """TERM to PID 1: dockerd gets exactly one TERM, the agent exits 0, nothing is left."""
    box = sandboxes()
    box.wait_ready()
    box.signal(signal.SIGTERM)
    assert box.wait(timeout=25) == 0
    terms = [line for line in box.iter_dockerd_lines() if "Processing signal" in line]
    assert terms == ["Processing signal 'terminated'"]
    exited = box.events_named("dockerd_exited")
    assert exited
    assert exited[-1]["exit_code"] == 0
    assert box.ns_processes() == {}


def test_hundred_orphans_are_reaped(sandboxes: Callable[..., Sandbox]) -> None:
    """100 orphans left in the namespace are all reaped by PID 1: no zombie remains."""
    box = sandboxes()
    box.wait_ready()
    spawner = box.nsenter(
        "/bin/sh", "-c", "for i in $(seq 100); do /bin/sh -c 'sleep 0.2 &'; done"
    )
    assert spawner.returncode == 0, spawner.stderr

    def settled() -> bool:
        procs = box.ns_processes().values()
        return not any(name == "sleep" or state == "Z" for _pid, name, state in procs)

    poll(settled, timeout=15, what="every orphan reaped")
    assert box.alive


def test_dockerd_that_cannot_start_backs_off_then_exit_1_with_its_error(
    sandboxes: Callable[..., Sandbox],
) -> None:
    """A storage driver that cannot run on the data root (btrfs on a folder that is not):
    restarts back off as configured, then exit 1 quoting dockerd's line and its remedy. (A
    bad flag is a configuration error instead: exit 2 at the first exit, test_bad_inputs.)"""
    box = sandboxes(
        agent_args=["--restart-backoff-initial", "0.2", "--restart-backoff-factor", "2",
                    "--restart-max-failures", "3"],
        dockerd_args=["--bridge=none", "--storage-driver=btrfs"],
    )
    assert box.wait(timeout=30) == 1
    delays = [e["delay_seconds"] for e in box.events_named("dockerd_restart_delayed")]
    assert delays == pytest.approx([0.2, 0.4], abs=0.05)
    failed = box.events_named("agent_failed")
    assert failed
    assert "failed to start 3 times" in failed[0]["error"]
    assert "prerequisites for driver not satisfied" in failed[0]["error"]
    assert "storage driver" in failed[0]["remedy"]
    (last,) = box.events_named("dockerd_failed")[-1:]
    assert last["category"] == "storage"


def test_config_error_exits_2_before_starting_anything(sandboxes: Callable[..., Sandbox]) -> None:
    """A bad setting exits 2 naming the key, the value and the source; dockerd never ran."""
    box = sandboxes(agent_args=["--restart-max-failures", "zero"])
    assert box.wait(timeout=15) == 2
    text = box.log_text()
    assert "restart.max_failures='zero'" in text
    assert "flag --restart-max-failures" in text
    assert not box.socket.exists()


def test_readyz_is_503_while_restarting_and_counter_matches_kills(
    sandboxes: Callable[..., Sandbox],
) -> None:
    """/readyz: 503 while dockerd is down or backing off, 200 once ready; restarts == kills."""
    box = sandboxes(
        agent_args=["--restart-healthy-after", "1h", "--restart-backoff-initial", "1",
                    "--restart-max-failures", "10"],
    )
    box.wait_ready()
    for kill in range(1, 3):
        pid = box.dockerd_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        poll(lambda: box.http("/readyz")[0] == 503, timeout=5, interval=0.02, what="503")
        box.wait_ready()
        assert box.metric("dind_dockerd_restarts_total", {"reason": "exit"}) == kill


def test_final_stop_stops_containers_before_dockerd(
    sandboxes: Callable[..., Sandbox], busybox_tar: Path
) -> None:
    """With live-restore, TERM to PID 1 still gives running containers their stop signal."""
    box = sandboxes()
    box.wait_ready()
    import_busybox(box, busybox_tar)
    box.docker(
        "run", "-d", "--name", "trapper", "--network", "none", "busybox:test",
        "sh", "-c", "trap 'echo got-term; exit 3' TERM; while true; do sleep 0.1; done",
    )  # fmt: skip
    box.signal(signal.SIGTERM)
    assert box.wait(timeout=40) == 0
    stopped = box.events_named("containers_stopped")
    assert stopped
    assert stopped[0]["containers"] == 1
    # The next daemon on this data root finds the container exited by its own trap.
    again = sandboxes(data_root=box.data_root)
    again.wait_ready()
    state = again.docker("inspect", "-f", "{{.State.ExitCode}}", "trapper").stdout.strip()
    assert state == "3"
    assert "got-term" in again.docker("logs", "trapper").stdout
