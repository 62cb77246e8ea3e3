"""Benchmarks of dockerd's lifecycle under the agent: recovery, hangs, rotations.

Owns: recovery after kill -9 and hang detection after SIGSTOP with the
default restart and liveness settings, and TLS rotation (the longest /_ping
gap, container continuity). Time to ready is ``bench.ready``'s; what clients
see across the same events is ``bench.clients``'. Every wait is bounded.
Does not own the sandbox harness or the report.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.probes import Workspace, ping, wait_ping
from tests.integration.sandbox import Sandbox, busybox_rootfs_tar, poll

TLS_ENV = {"DOCKER_TLS_CERTDIR": "/certs"}
# The agent's restart.healthy_after default: a dockerd ready longer than this
# is restarted at once when it dies (sooner, it is backed off as a failed start).
HEALTHY_AFTER = 10.0
START_TIMEOUT = 90.0


def _wait_healthy(ready_at: float) -> None:
    # Deliberate: the default restart policy treats a dockerd that dies
    # sooner than healthy_after as a failed start and backs off.
    time.sleep(max(0.0, ready_at + HEALTHY_AFTER + 0.5 - time.monotonic()))


def _new_dockerd(box: Sandbox, old: int) -> bool:
    pid = box.dockerd_pid()
    return pid is not None and pid != old and ping(box.socket)


def _more_events(box: Sandbox, name: str, seen: int) -> bool:
    return len(box.events_named(name)) > seen


@dataclass(slots=True, kw_only=True)
class Recovery:
    kill9: list[float] = field(default_factory=list)
    hang_detected: list[float] = field(default_factory=list)
    hang_ready: list[float] = field(default_factory=list)


def recovery(space: Workspace, kills: int, hangs: int) -> Recovery:
    """kill -9 and SIGSTOP a dockerd under default settings; time detection and return."""
    result = Recovery()
    box = space.ours("recovery", env=TLS_ENV)
    try:
        box.start()
        ready_at = wait_ping(box.socket, timeout=START_TIMEOUT)
        for _ in range(kills):
            _wait_healthy(ready_at)
            old = box.dockerd_pid()
            assert old is not None, box.log_tail()
            killed = time.monotonic()
            os.kill(old, signal.SIGKILL)
            poll(functools.partial(_new_dockerd, box, old), timeout=60, interval=0.005,
                 what="a new dockerd answering /_ping")
            ready_at = time.monotonic()
            result.kill9.append(ready_at - killed)
        for _ in range(hangs):
            _wait_healthy(ready_at)
            old = box.dockerd_pid()
            assert old is not None, box.log_tail()
            seen = len(box.events_named("dockerd_unhealthy"))
            stopped = time.monotonic()
            os.kill(old, signal.SIGSTOP)
            poll(functools.partial(_more_events, box, "dockerd_unhealthy", seen),
                 timeout=120, interval=0.02, what="dockerd_unhealthy")
            result.hang_detected.append(time.monotonic() - stopped)
            poll(functools.partial(_new_dockerd, box, old), timeout=120, interval=0.01,
                 what="a new dockerd after the hang")
            ready_at = time.monotonic()
            result.hang_ready.append(ready_at - stopped)
    finally:
        space.close(box)
    return result


@dataclass(slots=True, kw_only=True)
class Rotation:
    gaps: list[float] = field(default_factory=list)
    container_kept: list[bool] = field(default_factory=list)
    lifetime: float = 0.0


class _PingRecorder(threading.Thread):
    """Pings every few ms, bounded by ``limit`` seconds; keeps (time answered or given up,
    answered)."""

    def __init__(self, sock: Path, limit: float) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.limit = limit
        self.samples: list[tuple[float, bool]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self.stop.is_set() and time.monotonic() < deadline:
            answered = ping(self.sock, timeout=0.5)
            self.samples.append((time.monotonic(), answered))
            self.stop.wait(0.01)

    def longest_gap(self) -> float:
        """Longest time between two answers: a restart shows up whether the pings in between
        failed or (socket activation: queued in the held socket's backlog) were answered
        late."""
        longest, last_ok = 0.0, None
        for at, ok in self.samples:
            if ok:
                if last_ok is not None:
                    longest = max(longest, at - last_ok)
                last_ok = at
        return longest


def _container_pid(box: Sandbox, name: str) -> tuple[str, str]:
    out = box.docker("inspect", "-f", "{{.State.Pid}} {{.State.Running}}", name).stdout.split()
    return out[0], out[1]


def _one_rotation(box: Sandbox, seen: int, old: int, lifetime: float) -> float:
    """Wait for the next renewal and dockerd's restart; the longest /_ping gap meanwhile."""
    recorder = _PingRecorder(box.socket, limit=lifetime * 3 + 60)
    recorder.start()
    try:
        poll(lambda: len(box.events_named("certificates_rotated")) > seen,
             timeout=lifetime * 2 + 30, interval=0.05, what="certificates_rotated")
        poll(lambda: _new_dockerd(box, old), timeout=60, interval=0.02,
             what="dockerd restarted on the new certificate")
        # A little past the restart so the recorder sees the answers resume.
        poll(lambda: len(recorder.samples) > 5 and recorder.samples[-1][1],
             timeout=10, what="answers after the restart")
    finally:
        recorder.stop.set()
        recorder.join(timeout=5)
    return recorder.longest_gap()


def rotation(space: Workspace, rotations: int, lifetime: float) -> Rotation:
    """Short-lived server certs: each renewal restarts dockerd; the container must stay."""
    result = Rotation(lifetime=lifetime)
    box = space.ours("rotation", env=TLS_ENV,
                     agent_args=["--tls-server-lifetime", f"{lifetime:g}"])
    try:
        box.start()
        wait_ping(box.socket, timeout=START_TIMEOUT)
        box.docker("import", str(busybox_rootfs_tar(box.root)), "busybox:test")
        box.docker("run", "-d", "--name", "keep", "--network", "none", "busybox:test",
                   "sleep", "3600")
        before = _container_pid(box, "keep")
        for _ in range(rotations):
            seen = len(box.events_named("certificates_rotated"))
            old = box.dockerd_pid()
            assert old is not None, box.log_tail()
            result.gaps.append(_one_rotation(box, seen, old, lifetime))
            result.container_kept.append(_container_pid(box, "keep") == before)
    finally:
        space.close(box)
    return result
