"""A HUP 50 ms after dockerd's spawn (before dockerd has a handler for it) is not fatal: it is
held, delivered once dockerd runs, and the daemon.json edit it announces is applied."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.sandbox import Sandbox, poll

pytestmark = pytest.mark.integration

_TICKS = 100  # USER_HZ: /proc/PID/stat counts a process's start time in these


def _age_seconds(pid: int) -> float:
    started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - started / _TICKS


def test_hup_50_ms_after_the_spawn_is_held_then_reloads_daemon_json(
    sandboxes: Callable[..., Sandbox], tmp_path: Path,
) -> None:
    box = sandboxes(root=tmp_path / "box",
                    dockerd_args=["--bridge=none", "--config-file=/run/daemon.json"],
                    setup="echo '{\"debug\": false}' > /run/daemon.json")
    # dockerd's own spawn (`dockerd --version` may run first, as a version probe).
    started = poll(lambda: box.events_named("dockerd_started"), timeout=20, interval=0.001,
                   what="dockerd spawned")
    dockerd = next(host for host, (inner, _name, _state) in box.ns_processes().items()
                   if inner == started[0]["pid"])
    # The edit the HUP announces, made after dockerd read its configuration.
    (box.run_dir / "daemon.json").write_text(json.dumps({"debug": True}))
    time.sleep(max(0.0, 0.05 - _age_seconds(dockerd)))  # the input: the moment of the HUP
    box.signal(signal.SIGHUP)
    box.wait_ready(timeout=40)
    poll(lambda: box.events_named("signal_forwarded"), timeout=20, what="the HUP delivered")
    assert box.events_named("signal_held"), box.log_tail()
    forwarded = box.events_named("signal_forwarded")
    assert forwarded[0].get("held") is True, forwarded
    poll(lambda: box.docker("info", "--format", "{{.Debug}}").stdout.strip() == "true",
         timeout=20, what="dockerd reloaded daemon.json (debug on)")
    assert box.dockerd_pid() == dockerd, "dockerd was killed by the HUP"
    assert not box.events_named("dockerd_exited"), box.log_tail()
    assert (box.metric("dind_dockerd_restarts_total") or 0) == 0
    status = box.status()["dockerd"]
    assert status.get("failed_starts_in_window", 0) == 0, status
