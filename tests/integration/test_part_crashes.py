"""A crash in an auxiliary part (HTTP endpoint, container watcher, GC) never touches
dockerd: the part is logged, counted and restarted, and the agent goes on.

The real agent runs under ``python -m tests.harness`` with INJECT_FAULTS: each
named part does its work for a second, then raises as a bug would, once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import import_busybox
from tests.integration.sandbox import PYTHON, Sandbox, metric_value, poll

PARTS = ("http", "containers", "gc")


def _scrape(box: Sandbox) -> str | None:
    code, body = box.http("/metrics", timeout=2)
    return body if code == 200 else None


def test_crashes_in_http_watcher_and_gc_leave_dockerd_running_and_restart_the_part(
    sandboxes: Callable[..., Sandbox], busybox_tar: Path,
) -> None:
    box = sandboxes(
        env={"INJECT_FAULTS": ",".join(PARTS)},
        command=[PYTHON, "-m", "tests.harness", "run", "--log-level", "debug",
                 "--dataroot-gc-enabled", "--dataroot-gc-interval", "1s",
                 "--", "--bridge=none"],
    )
    box.wait_ready()
    dockerd = box.dockerd_pid()
    agent = box.agent_pid()
    assert dockerd is not None
    assert agent is not None

    def every_part_failed_once() -> str | None:
        body = _scrape(box)
        if body is None:
            return None
        failures = {part: metric_value(body, "dind_agent_part_failures_total", {"part": part})
                    for part in PARTS}
        return body if all(value == 1 for value in failures.values()) else None

    body = poll(every_part_failed_once, timeout=30, interval=0.2,
                what="one counted failure of each part, then the endpoint serving again")
    failed = {event["part"] for event in box.events_named("part_failed")}
    assert failed == set(PARTS), box.log_tail()
    for event in box.events_named("part_failed"):
        assert "fault injected" in event["error"], event
        assert event["restart_in_seconds"] == 1.0, event

    # dockerd was never touched; the agent did not die.
    assert box.dockerd_pid() == dockerd
    assert box.agent_pid() == agent
    assert metric_value(body, "dind_dockerd_restarts_total") in (None, 0.0)
    assert box.status()["dockerd"]["state"] == "running"
    assert not box.events_named("agent_died")

    # Restarted, each part works: the watcher sees a new container, GC checks again.
    import_busybox(box, busybox_tar)
    box.docker("create", "--name", "after-the-crash", "--network", "none", "busybox:test", "true")
    poll(lambda: (box.status()["containers"] or {}).get("created") == 1, timeout=15,
         interval=0.2, what="the restarted watcher counting the new container")
    checks = box.status()["data_root"]["gc"]["checks"]
    poll(lambda: box.status()["data_root"]["gc"]["checks"] >= checks + 2, timeout=15,
         interval=0.3, what="the restarted collector checking disk usage again")
    assert box.http("/readyz")[0] == 200
