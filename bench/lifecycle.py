"""Benchmarks of dockerd's lifecycle under the agent, with bare dockerd beside it.

Owns: time to ready (ours with TLS first start / restart, ours without TLS,
bare dockerd first start / restart, interleaved), recovery after kill -9,
hang detection after SIGSTOP with the default liveness settings, and TLS
rotation (API gap, container continuity). Every wait is bounded. Does not
own the sandbox harness or the report.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.probes import Workspace, ping, wait_ping
from tests.integration.sandbox import Sandbox, busybox_rootfs_tar, poll

TLS_ENV = {"DOCKER_TLS_CERTDIR": "/certs"}
BARE = ["dockerd", "--tls=false", "--bridge=none"]
# The agent's restart.healthy_after default: a dockerd ready longer than this
# is restarted at once when it dies (sooner, it is backed off as a failed start).
HEALTHY_AFTER = 10.0
START_TIMEOUT = 90.0


@dataclass(slots=True, kw_only=True)
class ReadyTimes:
    """Seconds from `unshare` to the first answered /_ping, per variant and run."""

    runs: dict[str, list[float]] = field(default_factory=dict)
    # Where our first start spends its time (from the agent's own log lines).
    phases: list[dict[str, float]] = field(default_factory=list)

    def add(self, variant: str, seconds: float) -> None:
        self.runs.setdefault(variant, []).append(seconds)


def _stop(space: Workspace, box: Sandbox) -> None:
    """Stop as `docker stop` would (TERM to PID 1, bounded), then make sure it is gone."""
    if box.alive:
        box.signal(signal.SIGTERM)
        # A slow stop is killed by close() either way.
        with contextlib.suppress(subprocess.TimeoutExpired):
            box.wait(timeout=30)
    space.close(box)


def _start_timed(box: Sandbox) -> tuple[float, float]:
    """Start ``box``; return (seconds to first /_ping, wall-clock start)."""
    wall = time.time()
    started = time.monotonic()
    box.start()
    answered = wait_ping(box.socket, timeout=START_TIMEOUT)
    return answered - started, wall


def _phases(box: Sandbox, wall_start: float) -> dict[str, float]:
    """Offsets of the agent's milestones from the start, from its JSON log lines."""
    marks = {"agent_started": "agent", "certificates_ready": "certs",
             "dockerd_started": "dockerd_spawned", "dockerd_ready": "dockerd_ready"}
    found: dict[str, float] = {}
    for event in box.events():
        name = marks.get(str(event.get("event")))
        if name and name not in found and "timestamp" in event:
            stamp = dt.datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))
            found[name] = stamp.timestamp() - wall_start
    return found


def time_to_ready(space: Workspace, runs: int) -> ReadyTimes:
    """Interleave ours and bare dockerd so load from other users hits both alike."""
    result = ReadyTimes()
    for run in range(runs):
        order: Sequence[str] = ("ours", "bare") if run % 2 == 0 else ("bare", "ours")
        for kind in order:
            if kind == "ours":
                first = space.sandbox("ours-first", env=TLS_ENV)
                seconds, wall = _start_timed(first)
                result.add("ours_tls_first", seconds)
                # After the timing: the agent logs dockerd_ready once it has
                # confirmed what /_ping already showed.
                first.wait_ready(timeout=60)
                result.phases.append(_phases(first, wall))
                _stop(space, first)
                again = space.sandbox("ours-restart", env=TLS_ENV, data_root=first.data_root,
                                      certs=first.certs)
                result.add("ours_tls_restart", _start_timed(again)[0])
                _stop(space, again)
            else:
                bare = space.sandbox("bare-first", command=BARE)
                result.add("bare_first", _start_timed(bare)[0])
                _stop(space, bare)
                bare_again = space.sandbox("bare-restart", command=BARE, data_root=bare.data_root)
                result.add("bare_restart", _start_timed(bare_again)[0])
                _stop(space, bare_again)
        plain = space.sandbox("ours-notls")
        result.add("ours_notls_first", _start_timed(plain)[0])
        _stop(space, plain)
    return result


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
    box = space.sandbox("recovery", env=TLS_ENV)
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
    box = space.sandbox(
        "rotation", env=TLS_ENV, agent_args=["--tls-server-lifetime", f"{lifetime:g}"]
    )
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
