"""The agent speaking sd_notify to a service manager (systemd mode: not PID 1)."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.sandbox import PYTHON, Sandbox, poll

pytestmark = pytest.mark.integration


class FakeServiceManager:
    """A real datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def drain(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            fields = dict(
                line.split("=", 1) for line in data.decode().splitlines() if "=" in line
            )
            self.messages.append((time.monotonic(), fields))
        return [fields for _when, fields in self.messages]

    def saw(self, key: str, value: str | None = None) -> bool:
        return any(
            key in m and (value is None or m[key] == value) for m in self.drain()
        )

    def close(self) -> None:
        self.sock.close()


def test_ready_status_watchdog_and_stopping_reach_the_service_manager(
    sandboxes: Callable[..., Sandbox], tmp_path: Path
) -> None:
    """READY=1 once dockerd is ready, STATUS= lines, WATCHDOG=1 while healthy, STOPPING=1."""
    root = tmp_path / "notify"
    (root / "run").mkdir(parents=True)
    manager = FakeServiceManager(root / "run" / "systemd-notify.sock")
    try:
        agent = [PYTHON, "-m", "supervisor", "run", "--", "--bridge=none"]
        box = sandboxes(
            root=root,
            # The shell stays PID 1, so the agent runs as under systemd: not PID 1.
            command=["/bin/sh", "-c", '"$@"; echo "agent exit $?"', "sh", *agent],
            env={"NOTIFY_SOCKET": "/run/systemd-notify.sock", "WATCHDOG_USEC": "600000"},
        )
        poll(lambda: manager.saw("READY", "1"), timeout=30, what="READY=1")
        assert box.docker_answers()
        statuses = [m["STATUS"] for m in manager.drain() if "STATUS" in m]
        assert any("ready" in s for s in statuses)
        poll(lambda: sum("WATCHDOG" in m for m in manager.drain()) >= 3, timeout=10,
             what="three WATCHDOG=1 (every 0.3 s)")
        agent_pid = box.agent_pid()
        assert agent_pid is not None
        import os

        os.kill(agent_pid, signal.SIGTERM)
        poll(lambda: manager.saw("STOPPING", "1"), timeout=30, what="STOPPING=1")
        poll(lambda: "agent exit 0" in box.log_text(), timeout=30, what="agent exit 0")
    finally:
        manager.close()


def test_watchdog_pings_stop_while_dockerd_is_hung(
    sandboxes: Callable[..., Sandbox], tmp_path: Path
) -> None:
    """A hung dockerd (SIGSTOP) stops WATCHDOG=1 until it is replaced by a healthy one."""
    import os

    root = tmp_path / "hung"
    (root / "run").mkdir(parents=True)
    manager = FakeServiceManager(root / "run" / "systemd-notify.sock")
    try:
        agent = [
            PYTHON, "-m", "supervisor", "run",
            "--liveness-interval", "0.5", "--liveness-timeout", "0.4",
            "--liveness-failures", "3", "--liveness-kill-grace", "1",
            "--", "--bridge=none",
        ]
        box = sandboxes(
            root=root,
            command=["/bin/sh", "-c", '"$@"', "sh", *agent],
            env={"NOTIFY_SOCKET": "/run/systemd-notify.sock", "WATCHDOG_USEC": "400000"},
        )
        poll(lambda: manager.saw("READY", "1"), timeout=30, what="READY=1")
        hung = box.dockerd_pid()
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)
        poll(lambda: box.events_named("dockerd_ping_failed"), timeout=10, what="a missed ping")
        manager.drain()
        quiet_from = time.monotonic()
        poll(lambda: box.events_named("dockerd_unhealthy"), timeout=10, what="hang detected")
        quiet_until = time.monotonic()
        pings_while_hung = [
            when
            for when, m in manager.messages
            if "WATCHDOG" in m and quiet_from <= when <= quiet_until
        ]
        assert pings_while_hung == []
        poll(lambda: box.status()["dockerd"]["state"] == "running", timeout=30, what="ready")
        poll(lambda: any("WATCHDOG" in m for m in manager.drain()), timeout=5,
             what="WATCHDOG=1 again")
    finally:
        manager.close()
